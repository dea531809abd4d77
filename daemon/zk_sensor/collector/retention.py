"""How long the collector keeps rounds, and the thread that forgets older ones.

Rounds are deleted oldest first, in steps of at most STEP_ROUNDS rounds, each its own
short transaction under the store's lock: a delivery or a page arriving meanwhile waits
for one step, never for the whole backlog (a year of history under a retention just
shortened). With the rounds go their counts in `lineages` and every rollup bucket whose
whole time span is past retention: a bucket straddling the cutoff keeps counting rounds
already deleted until it too is past, so a long range's first point may hold a little more
than the rounds still stored. Freed pages are reused by new rounds: the file stops growing
once it holds `retention` of history.
"""

import logging
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable

from zk_sensor.collector.backend import RoundStore, StoreUnavailable
from zk_sensor.collector.schema import SPANS
from zk_sensor.config.sources import SettingsError

log = logging.getLogger("zk_collector")

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"([0-9]{1,12})([smhdw]?)")
FOREVER = "forever"
# One step's work: a few milliseconds on the benchmark's machine, fsync included
# (docs/explanation/cost-and-scale.md).
STEP_ROUNDS = 500
# Seconds between sweeps once caught up: rounds live at most this long past retention.
SWEEP_SECONDS = 60.0

OLDEST = ("SELECT id, coalesce(incarnation, '') FROM rounds WHERE coalesce(fleet, '') = ? "
          "AND received_at < ? ORDER BY received_at LIMIT ?")


def parse_retention(value: str) -> float | None:
    """Seconds to keep rounds, or None to keep them all. 0 is refused rather than read as
    either 'keep nothing' or 'keep everything': whoever wrote it meant one of them."""
    text = value.strip().lower()
    if text == FOREVER:
        return None
    match = DURATION.fullmatch(text)
    if match is None or int(match[1]) == 0:
        raise SettingsError(f"retention {value!r} must be a duration like 365d, 12h, 30m or "
                            f"3600 (seconds; units s, m, h, d, w), or {FOREVER!r}")
    return float(int(match[1]) * UNITS[match[2] or "s"])


def forget(db: sqlite3.Connection, before: float, limit: int) -> int:
    """Delete up to `limit` of the oldest rounds received before `before`, in the caller's
    transaction; the number deleted."""
    fleets = [row[0] for row in db.execute("SELECT DISTINCT fleet FROM lineages")]
    deleted = 0
    for fleet in fleets:
        victims = db.execute(OLDEST, (fleet, before, limit - deleted)).fetchall()
        db.executemany("DELETE FROM rounds WHERE id = ?", ((id_,) for id_, _ in victims))
        db.executemany("UPDATE lineages SET rounds = rounds - ? WHERE fleet = ? "
                       "AND incarnation = ?",
                       ((n, fleet, incarnation) for incarnation, n
                        in Counter(incarnation for _, incarnation in victims).items()))
        forget_rollups(db, fleet, before)
        deleted += len(victims)
        if deleted >= limit:
            break
    return deleted


def forget_rollups(db: sqlite3.Connection, fleet: str, before: float) -> None:
    """Drop the fleet's buckets that end before both the cutoff and its oldest round left.
    A bucket goes at the first step after its last round went, so a step drops at most a
    bucket per span for each round it deleted, and those that straddled an earlier cutoff."""
    oldest = db.execute("SELECT min(received_at) FROM rounds WHERE coalesce(fleet, '') = ?",
                        (fleet,)).fetchone()[0]
    until = before if oldest is None else min(before, oldest)
    db.executemany("DELETE FROM rollups WHERE fleet = ? AND span = ? AND bucket <= ? - ?",
                   ((fleet, span, until, span) for span in SPANS))


class Pruner:
    """A daemon thread that keeps deleting rounds older than `retention` seconds."""

    def __init__(self, store: RoundStore, retention: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="retention", daemon=True)

    def start(self) -> "Pruner":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def sweep(self) -> None:
        """Delete step after step until nothing is past retention; between steps, wait as
        long as the step took, so that requests get at least half the store."""
        before = self.clock() - self.retention
        total = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            deleted = self.store.forget(before, STEP_ROUNDS)
            total += deleted
            if deleted < STEP_ROUNDS:
                break
            self.stopping.wait(time.monotonic() - started)
        if total:
            log.info("retention: deleted %d rounds received before %s", total,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before)))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sweep()
            except (sqlite3.Error, StoreUnavailable) as error:
                log.warning("retention: %s; trying again in %.0f s", error, SWEEP_SECONDS)
            self.stopping.wait(SWEEP_SECONDS)
