"""Rounds kept in SQLite (WAL): one row per round key, fenced by the leader epoch.

A round's key is (fleet, incarnation, round) and its fence is per (fleet, incarnation),
so a rebuilt namespace, whose rounds and epochs restart at 0, is neither mistaken for
duplicates nor refused as stale (see schema.py).

Each write is its own transaction with synchronous=FULL, so once a delivery is
acknowledged it survives a crash of the collector and a power cut of its machine; the
rate is one delivery per period per fleet, so the fsync is affordable (see bench/). The
same transaction counts the round in `lineages` and its time buckets in `rollups`, so
what the probes and the charts read never disagrees with the rounds, and none of them
reads the history (see schema.py, series.py; retention.py deletes old rounds).

One connection serves every thread, one statement at a time under `lock`.
"""

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from zk_sensor.collector.retention import forget
from zk_sensor.collector.schema import immediate, prepare
from zk_sensor.collector.series import RANGES, roll_up, series

COLUMNS = ("id", "fleet", "incarnation", "round", "epoch", "leader", "mean", "count", "min",
           "max", "measured_at", "received_at", "source")

SELECT_ROUNDS = f"SELECT {', '.join(COLUMNS)} FROM rounds"

# Written as the unique index `rounds_key` is, so that SQLite answers it from the index.
KNOWN_ROUND = ("SELECT id FROM rounds WHERE coalesce(fleet, '') = ? "
               "AND coalesce(incarnation, '') = ? AND round = ?")

# What the probes read: each a lookup by key, or a scan of a table with a row per
# (fleet, incarnation), never of the rounds.
NEWEST = f"{SELECT_ROUNDS} WHERE id = (SELECT max(id) FROM rounds)"
FENCES = "SELECT fleet, incarnation, epoch FROM fences ORDER BY fleet, rowid"
FLEETS = ("SELECT fleet, sum(rounds), min(first_at), max(last_at) FROM lineages "
          "GROUP BY fleet ORDER BY fleet")
COUNT_LINEAGE = """
INSERT INTO lineages (fleet, incarnation, rounds, first_at, last_at) VALUES (?, ?, 1, ?, ?)
ON CONFLICT (fleet, incarnation) DO UPDATE SET
    rounds = rounds + 1, first_at = min(first_at, excluded.first_at),
    last_at = max(last_at, excluded.last_at)"""

# A fleet's rounds newest first, from the `rounds_time` index: arrival order, which a
# page continues from the arrival of its last row (`before`, an id).
FLEET_ROUNDS = f"{SELECT_ROUNDS} WHERE coalesce(fleet, '') = :fleet"
FLEET_BEFORE = (" AND (received_at, id) < "
                "((SELECT received_at FROM rounds WHERE id = :before), :before)")
FLEET_ORDER = " ORDER BY received_at DESC, id DESC LIMIT :limit"


# The summary lists this many fleets at most (those that delivered last), and this many
# incarnations of each (the newest): whoever can write cannot grow it without bound.
SUMMARY_FLEETS = 100
SUMMARY_INCARNATIONS = 10


def summarize(last: Sequence[Any] | None, fences: Sequence[Sequence[Any]],
              fleets: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The summary's shape from its three reads (NEWEST, FENCES, FLEETS), in either store;
    `truncated` counts the fleets left out."""
    recent = sorted(fleets, key=lambda row: row[3], reverse=True)[:SUMMARY_FLEETS]
    shown = sorted(recent, key=lambda row: row[0] or "")
    names = {row[0] for row in shown}
    epochs: dict[Any, list[Sequence[Any]]] = {}
    for fence in fences:
        if fence[0] in names:
            epochs.setdefault(fence[0], []).append(fence)
    return {
        "rounds": sum(rounds for _, rounds, _, _ in fleets),
        "last": dict(zip(COLUMNS, last, strict=True)) if last else None,
        "fleets": [{"fleet": fleet or None, "rounds": rounds, "first_at": first,
                    "last_at": newest} for fleet, rounds, first, newest in shown],
        "epochs": [{"fleet": fleet or None, "incarnation": incarnation or None,
                    "epoch": epoch} for fleet, _ in sorted(epochs.items())
                   for _, incarnation, epoch in epochs[fleet][-SUMMARY_INCARNATIONS:]],
        "truncated": len(fleets) - len(shown),
    }


class Outcome(Enum):
    """What became of a write: the status a leader's courier acts on."""
    STORED = "stored"
    DUPLICATE = "duplicate"
    STALE_EPOCH = "stale_epoch"


@dataclass(frozen=True)
class Round:
    """One delivered round as the collector keeps it; `source` is the API it came
    through (`json`, or the seed's `nuevo`), whose rounds carry less."""
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
    """The rounds in one SQLite file (WAL, synchronous FULL: a stored round survives a
    power cut), for a collector that keeps its own."""
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.expired = 0  # rounds deleted by retention since the start
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
        row: tuple[int] | None = self.db.execute(KNOWN_ROUND,
                                                 (*item.lineage, item.round)).fetchone()
        return None if row is None else row[0]

    def _raise_fence(self, item: Round) -> int | None:
        """Raise the fence of the round's (fleet, incarnation) to its epoch; if the fence is
        already higher, leave it and return it: the sender is a deposed leader."""
        if item.epoch is None:
            return None
        fence: tuple[int] | None = self.db.execute(
            "SELECT epoch FROM fences WHERE fleet = ? AND incarnation = ?", item.lineage
        ).fetchone()
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
        self.db.execute(COUNT_LINEAGE, (*item.lineage, received_at, received_at))
        roll_up(self.db, item.lineage[0], received_at, item.mean, item.min, item.max)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def latest(self, limit: int, before_id: int | None = None,
               fleet: str | None = None) -> list[dict[str, Any]]:
        """Newest first, of every fleet or of one ('' for the absent one); `before_id`
        pages back through history without OFFSET scans."""
        params: dict[str, Any] = {"limit": limit, "before": before_id, "fleet": fleet}
        if fleet is not None:
            query = (FLEET_ROUNDS + (FLEET_BEFORE if before_id is not None else "")
                     + FLEET_ORDER)
        else:
            query = (SELECT_ROUNDS + (" WHERE id < :before" if before_id is not None else "")
                     + " ORDER BY id DESC LIMIT :limit")
        with self.lock:
            rows = self.db.execute(query, params).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def summary(self) -> dict[str, Any]:
        """Totals, the newest round, each fleet's rounds, and each (fleet, incarnation)'s
        fence, a fleet's incarnations in the order they first delivered (the newest last).
        Read from the counters, so it costs the same at a million rounds as at ten."""
        with self.lock:
            return summarize(self.db.execute(NEWEST).fetchone(),
                             self.db.execute(FENCES).fetchall(),
                             self.db.execute(FLEETS).fetchall())

    def known_fleet(self, fleet: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM lineages WHERE fleet = ? LIMIT 1",
                                   (fleet,)).fetchone() is not None

    def series(self, fleet: str, range_name: str, now: float | None = None) -> dict[str, Any]:
        """The fleet's ('' for the absent one) points over a range of RANGES, ending now."""
        at = time.time() if now is None else now
        with self.lock:
            return series(self.db, fleet, RANGES[range_name], at)

    def forget(self, before: float, limit: int) -> int:
        """One step of retention (retention.py): up to `limit` rounds received before
        `before`, in one transaction."""
        with self.lock, immediate(self.db):
            deleted = forget(self.db, before, limit)
            self.expired += deleted
        return deleted
