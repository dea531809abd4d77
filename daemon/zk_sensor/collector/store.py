"""Rounds kept in SQLite (WAL): one row per round key, fenced by the leader epoch.

A round's key is (fleet, incarnation, round) and its fence is per (fleet, incarnation),
so a rebuilt namespace, whose rounds and epochs restart at 0, is neither mistaken for
duplicates nor refused as stale (see schema.py).

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

from .schema import immediate, prepare

COLUMNS = ("id", "fleet", "incarnation", "round", "epoch", "leader", "mean", "count", "min",
           "max", "measured_at", "received_at", "source")

# Written as the unique index `rounds_key` is, so that SQLite answers it from the index.
KNOWN_ROUND = ("SELECT id FROM rounds WHERE coalesce(fleet, '') = ? "
               "AND coalesce(incarnation, '') = ? AND round = ?")


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    STALE_EPOCH = "stale_epoch"


@dataclass(frozen=True)
class Round:
    mean: float
    source: str
    fleet: str | None = None
    incarnation: str | None = None
    round: int | None = None
    epoch: int | None = None
    leader: str | None = None
    count: int | None = None
    min: float | None = None
    max: float | None = None
    measured_at: float | None = None

    @property
    def lineage(self) -> tuple[str, str]:
        """(fleet, incarnation) as the key columns compare them: absent is ''."""
        return self.fleet or "", self.incarnation or ""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        prepare(self.db)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def add(self, item: Round, now: float | None = None) -> tuple[Outcome, int | None]:
        """Store a round unless its key is known or its epoch is older than the fence.

        A known round is a duplicate whatever its epoch (a new leader re-sending it is
        harmless); only a round not yet stored is fenced by the epoch.
        """
        received_at = time.time() if now is None else now
        with self.lock, immediate(self.db):
            known = self._known(item)
            if known is not None:
                return Outcome.DUPLICATE, known
            fence = self._raise_fence(item)
            if fence is not None:
                return Outcome.STALE_EPOCH, fence
            return Outcome.STORED, self._insert(item, received_at)

    def _known(self, item: Round) -> int | None:
        """The id of the row already holding this round's key, if any."""
        if item.round is None:
            return None
        row = self.db.execute(KNOWN_ROUND, (*item.lineage, item.round)).fetchone()
        return None if row is None else row[0]

    def _raise_fence(self, item: Round) -> int | None:
        """Raise the fence of the round's (fleet, incarnation) to its epoch; if the fence is
        already higher, leave it and return it: the sender is a deposed leader."""
        if item.epoch is None:
            return None
        fence = self.db.execute("SELECT epoch FROM fences WHERE fleet = ? AND incarnation = ?",
                                item.lineage).fetchone()
        if fence is not None and item.epoch < fence[0]:
            return fence[0]
        self.db.execute(
            "INSERT INTO fences (fleet, incarnation, epoch) VALUES (?, ?, ?) "
            "ON CONFLICT (fleet, incarnation) DO UPDATE SET epoch = max(epoch, excluded.epoch)",
            (*item.lineage, item.epoch))
        return None

    def _insert(self, item: Round, received_at: float) -> int:
        cursor = self.db.execute(
            "INSERT INTO rounds (fleet, incarnation, round, epoch, leader, mean, count, min, "
            "max, measured_at, received_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item.fleet, item.incarnation, item.round, item.epoch, item.leader, item.mean,
             item.count, item.min, item.max, item.measured_at, received_at, item.source))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

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
        """Totals, the newest round, and each (fleet, incarnation)'s fence, a fleet's
        incarnations in the order they first delivered (the newest last)."""
        with self.lock:
            total = self.db.execute("SELECT count(*) FROM rounds").fetchone()[0]
            last = self.db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM rounds ORDER BY id DESC LIMIT 1").fetchone()
            fences = self.db.execute(
                "SELECT fleet, incarnation, epoch FROM fences ORDER BY fleet, rowid").fetchall()
        return {
            "rounds": total,
            "last": dict(zip(COLUMNS, last, strict=True)) if last else None,
            "epochs": [{"fleet": fleet or None, "incarnation": incarnation or None,
                        "epoch": epoch} for fleet, incarnation, epoch in fences],
        }
