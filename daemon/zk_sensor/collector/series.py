"""A fleet's means over an hour, a day, a week, a month or a year, in at most a few
hundred points whatever the history holds.

Each point is a time bucket: how many rounds arrived in it, the mean of their means, the
lowest min and the highest max. The last hour is bucketed from the rounds themselves (a
range of the `rounds_time` index: an hour is a few thousand rows); longer ranges from the
`rollups` that each insert keeps up to date (schema.py), so a year reads about 4,400 rows
instead of tens of millions. Times are when the collector received each round: its own
clock, where a node's (a Raspberry Pi without a battery clock, before NTP) may say 1970.
"""

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from zk_sensor.collector.schema import SPANS

DAY = 86400


@dataclass(frozen=True)
class Range:
    """A chart's time range: how far back, how wide a point is, and which rollup the
    points are summed from, so no range ever scans the whole history."""
    seconds: int
    step: int
    source: int | None  # the rollup span the points are summed from; None: the rounds

    def window(self, now: float) -> tuple[int, int]:
        """[start, end) in whole steps, ending with the step that holds `now`."""
        end = (int(now) // self.step + 1) * self.step
        return end - self.seconds, end


RANGES = {
    "hour": Range(3600, 10, None),
    "day": Range(DAY, 300, SPANS[0]),
    "week": Range(7 * DAY, 1800, SPANS[0]),
    "month": Range(30 * DAY, 7200, SPANS[1]),
    "year": Range(365 * DAY, DAY, SPANS[1]),
}

# The rollups of a round (':at' is when it arrived); the bucket is computed by SQLite, as
# in schema.derive, so that both put a round in the same bucket to the last bit.
ROLL_UP = """
INSERT INTO rollups (fleet, span, bucket, rounds, mean_sum, low, high)
VALUES (:fleet, :span, CAST(:at / :span AS INTEGER) * :span, 1, :mean, :low, :high)
ON CONFLICT (fleet, span, bucket) DO UPDATE SET
    rounds = rounds + 1, mean_sum = mean_sum + excluded.mean_sum,
    low = min(low, excluded.low), high = max(high, excluded.high)"""

FROM_ROUNDS = """
SELECT CAST(received_at / :step AS INTEGER) * :step AS t, count(*), avg(mean),
       min(coalesce(min, mean)), max(coalesce(max, mean))
FROM rounds WHERE coalesce(fleet, '') = :fleet AND received_at >= :start AND received_at < :end
GROUP BY t ORDER BY t"""

FROM_ROLLUPS = """
SELECT bucket / :step * :step AS t, sum(rounds), sum(mean_sum) / sum(rounds), min(low),
       max(high)
FROM rollups WHERE fleet = :fleet AND span = :span AND bucket >= :start AND bucket < :end
GROUP BY t ORDER BY t"""

INCARNATIONS = """
SELECT incarnation, first_at FROM lineages
WHERE fleet = :fleet AND first_at >= :start AND first_at < :end
  AND first_at > (SELECT min(first_at) FROM lineages WHERE fleet = :fleet)
ORDER BY first_at"""


class SeriesQueries(NamedTuple):
    """The three reads of a series, in a database's own dialect (postgres.py has its own)."""
    from_rounds: str
    from_rollups: str
    incarnations: str


SQLITE_QUERIES = SeriesQueries(FROM_ROUNDS, FROM_ROLLUPS, INCARNATIONS)


class Database(Protocol):
    """A connection of either store (sqlite3 or psycopg): both answer a query and its
    named parameters with rows."""

    def execute(self, query: str, params: dict[str, Any], /) -> Iterable[Sequence[Any]]: ...


def roll_up(db: sqlite3.Connection, fleet: str, at: float, mean: float, low: float | None,
            high: float | None) -> None:
    """Count a new round in each span's bucket; in the insert's transaction, so the
    rollups never disagree with the rounds."""
    db.executemany(ROLL_UP, ({"fleet": fleet, "span": span, "at": at, "mean": mean,
                              "low": mean if low is None else low,
                              "high": mean if high is None else high} for span in SPANS))


def series(db: Database, fleet: str, span: Range, now: float,
           queries: SeriesQueries = SQLITE_QUERIES) -> dict[str, Any]:
    """The buckets of `span` ending now that hold rounds of `fleet` ('' for the absent
    one), a bucket without rounds left out rather than drawn as zero; and when the
    fleet's later incarnations started within it (its namespace was rebuilt)."""
    start, end = span.window(now)
    params = {"fleet": fleet, "step": span.step, "start": start, "end": end,
              "span": span.source}
    rows = db.execute(queries.from_rounds if span.source is None else queries.from_rollups,
                      params)
    found = [{"t": t, "rounds": rounds, "mean": mean, "min": low, "max": high}
             for t, rounds, mean, low, high in rows]
    starts = db.execute(queries.incarnations, params)
    return {"start": start, "end": end, "step": span.step, "points": found,
            "incarnations": [{"incarnation": incarnation or None, "first_at": first}
                             for incarnation, first in starts]}
