"""Rounds kept in SQLite (WAL): one row per round key, fenced by the leader epoch.

Each write is its own transaction with synchronous=FULL, so once a delivery is
acknowledged it survives a crash of the collector and a power cut of its machine; the
rate is one delivery per period per fleet, so the fsync is affordable (see bench/).
"""

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    fleet TEXT,
    round INTEGER,
    epoch INTEGER,
    leader TEXT,
    mean REAL NOT NULL,
    count INTEGER,
    min REAL,
    max REAL,
    measured_at REAL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rounds_key ON rounds (fleet, round) WHERE round IS NOT NULL;
CREATE TABLE IF NOT EXISTS fences (
    fleet TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
);
"""

COLUMNS = ("id", "fleet", "round", "epoch", "leader", "mean", "count", "min", "max",
           "measured_at", "received_at", "source")


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    STALE_EPOCH = "stale_epoch"


@dataclass(frozen=True)
class Round:
    mean: float
    source: str
    fleet: str | None = None
    round: int | None = None
    epoch: int | None = None
    leader: str | None = None
    count: int | None = None
    min: float | None = None
    max: float | None = None
    measured_at: float | None = None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def add(self, item: Round, now: float | None = None) -> tuple[Outcome, int | None]:
        """Store a round unless its key is known or its epoch is older than the fence."""
        received_at = time.time() if now is None else now
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                outcome = self._add_locked(item, received_at)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return outcome

    def _add_locked(self, item: Round, received_at: float) -> tuple[Outcome, int | None]:
        """A known round is a duplicate whatever its epoch (a new leader re-sending it is
        harmless); only a round not yet stored is fenced by the epoch."""
        if item.round is not None:
            known = self.db.execute(
                "SELECT id FROM rounds WHERE fleet IS ? AND round = ?",
                (item.fleet, item.round)).fetchone()
            if known is not None:
                return Outcome.DUPLICATE, known[0]
        if item.epoch is not None:
            fence = self.db.execute(
                "SELECT epoch FROM fences WHERE fleet IS ?", (item.fleet,)).fetchone()
            if fence is not None and item.epoch < fence[0]:
                return Outcome.STALE_EPOCH, fence[0]
            self.db.execute(
                "INSERT INTO fences (fleet, epoch) VALUES (?, ?) "
                "ON CONFLICT (fleet) DO UPDATE SET epoch = max(epoch, excluded.epoch)",
                (item.fleet, item.epoch))
        cursor = self.db.execute(
            "INSERT INTO rounds (fleet, round, epoch, leader, mean, count, min, max, "
            "measured_at, received_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item.fleet, item.round, item.epoch, item.leader, item.mean, item.count, item.min,
             item.max, item.measured_at, received_at, item.source))
        return Outcome.STORED, cursor.lastrowid

    def latest(self, limit: int, before_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first; `before_id` pages back through history without OFFSET scans."""
        query = f"SELECT {', '.join(COLUMNS)} FROM rounds"
        params: tuple[Any, ...] = ()
        if before_id is not None:
            query += " WHERE id < ?"
            params = (before_id,)
        query += " ORDER BY id DESC LIMIT ?"
        with self.lock:
            rows = self.db.execute(query, (*params, limit)).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def summary(self) -> dict[str, Any]:
        with self.lock:
            total = self.db.execute("SELECT count(*) FROM rounds").fetchone()[0]
            last = self.db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM rounds ORDER BY id DESC LIMIT 1").fetchone()
            fences = dict(self.db.execute("SELECT fleet, epoch FROM fences").fetchall())
        return {
            "rounds": total,
            "last": dict(zip(COLUMNS, last, strict=True)) if last else None,
            "epochs": fences,
        }
