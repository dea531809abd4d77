"""Rounds kept in PostgreSQL, the store that two or more collectors share.

A daemon sends a round to whichever collector the address in front of them picks, and
sends it again when it is unsure the first try landed; so two collectors may hold the same
round, or rounds of two leaders, at the same moment. The database decides, in one
transaction per round, as the SQLite store does in one file:
- the fence is a row per (fleet, incarnation), raised with an upsert that locks it, so
  every write of a lineage runs after the previous one committed and sees it; a round whose
  epoch is below the fence is refused whichever collector raised it;
- the round's key is a unique index, and the insert does nothing on a conflict: a round is
  stored once whatever the interleaving.
The counters and rollups follow in the same transaction (schema.py tells why they exist).

Each collector holds one connection, one transaction at a time under `lock` (a collector
writes one round per period per fleet). Once the connection fails, requests are answered
503 (backend.StoreUnavailable) until a new one works; a transaction whose commit went
unanswered may have landed, which is harmless: the daemon sends the round again and it is
a duplicate. The password comes from libpq's own sources (a `passfile`, PGPASSFILE,
~/.pgpass), never from the URI in the logs.
"""

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from zk_sensor.collector.backend import StoreUnavailable
from zk_sensor.collector.postgres_schema import prepare
from zk_sensor.collector.schema import SPANS
from zk_sensor.collector.series import RANGES, SeriesQueries, series
from zk_sensor.collector.store import COLUMNS, NEWEST, SELECT_ROUNDS, Outcome, Round, summarize

log = logging.getLogger("zk_collector")

# Seconds to wait for a connection, for a statement, and for a silent server's TCP.
CONNECT_TIMEOUT = 3
STATEMENT_TIMEOUT = 5
# Seconds between connection attempts while the database is away: requests meanwhile are
# refused at once instead of each waiting CONNECT_TIMEOUT under the lock.
RECONNECT_EVERY = 1.0
# What ends a connection or a transaction through no fault of the request (a timeout, a
# server shut down, a deadlock are OperationalErrors too).
LOST = (psycopg.OperationalError, psycopg.InterfaceError)

KNOWN_ROUND = ("SELECT id FROM rounds WHERE coalesce(fleet, '') = %s "
               "AND coalesce(incarnation, '') = %s AND round = %s")
RAISE_FENCE = """
INSERT INTO fences (fleet, incarnation, epoch) VALUES (%s, %s, %s)
ON CONFLICT (fleet, incarnation) DO UPDATE SET epoch = greatest(fences.epoch, excluded.epoch)
RETURNING epoch"""
INSERT_ROUND = """
INSERT INTO rounds (fleet, incarnation, round, epoch, leader, mean, count, min, max,
                    measured_at, received_at, source)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT ((coalesce(fleet, '')), (coalesce(incarnation, '')), round)
    WHERE round IS NOT NULL DO NOTHING
RETURNING id"""
COUNT_LINEAGE = """
INSERT INTO lineages (fleet, incarnation, rounds, first_at, last_at) VALUES (%s, %s, 1, %s, %s)
ON CONFLICT (fleet, incarnation) DO UPDATE SET
    rounds = lineages.rounds + 1, first_at = least(lineages.first_at, excluded.first_at),
    last_at = greatest(lineages.last_at, excluded.last_at)"""
ROLL_UP = """
INSERT INTO rollups (fleet, span, bucket, rounds, mean_sum, low, high)
VALUES (%(fleet)s, %(span)s, floor(%(at)s / %(span)s)::bigint * %(span)s, 1, %(mean)s,
        %(low)s, %(high)s)
ON CONFLICT (fleet, span, bucket) DO UPDATE SET
    rounds = rollups.rounds + 1, mean_sum = rollups.mean_sum + excluded.mean_sum,
    low = least(rollups.low, excluded.low), high = greatest(rollups.high, excluded.high)"""

FENCES = ("SELECT f.fleet, f.incarnation, f.epoch FROM fences f "
          "LEFT JOIN lineages l USING (fleet, incarnation) "
          "ORDER BY f.fleet, l.first_at NULLS LAST, f.incarnation")
FLEETS = ("SELECT fleet, sum(rounds)::bigint, min(first_at), max(last_at) FROM lineages "
          "GROUP BY fleet ORDER BY fleet")
FLEET_ROUNDS = f"{SELECT_ROUNDS} WHERE coalesce(fleet, '') = %(fleet)s"
FLEET_BEFORE = (" AND (received_at, id) < "
                "((SELECT received_at FROM rounds WHERE id = %(before)s), %(before)s)")

QUERIES = SeriesQueries(
    from_rounds="""
SELECT floor(received_at / %(step)s)::bigint * %(step)s AS t, count(*), avg(mean),
       min(coalesce(min, mean)), max(coalesce(max, mean))
FROM rounds WHERE coalesce(fleet, '') = %(fleet)s AND received_at >= %(start)s
    AND received_at < %(end)s
GROUP BY t ORDER BY t""",
    from_rollups="""
SELECT bucket / %(step)s * %(step)s AS t, sum(rounds)::bigint,
       sum(mean_sum) / sum(rounds)::float8, min(low), max(high)
FROM rollups WHERE fleet = %(fleet)s AND span = %(span)s AND bucket >= %(start)s
    AND bucket < %(end)s
GROUP BY t ORDER BY t""",
    incarnations="""
SELECT incarnation, first_at FROM lineages
WHERE fleet = %(fleet)s AND first_at >= %(start)s AND first_at < %(end)s
  AND first_at > (SELECT min(first_at) FROM lineages WHERE fleet = %(fleet)s)
ORDER BY first_at""")

# Retention's step: the oldest rounds of a fleet, those another collector is deleting
# right now skipped, so two pruners never count the same round twice.
FORGET = """
DELETE FROM rounds WHERE id IN (
    SELECT id FROM rounds WHERE coalesce(fleet, '') = %s AND received_at < %s
    ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING coalesce(incarnation, '')"""


def describe(url: str) -> str:
    """user@host:port/dbname, for logs: never a password, even one written in the URI."""
    parts = conninfo_to_dict(url)
    host = parts.get("host") or "local socket"
    return (f"postgresql {parts.get('user') or 'default user'}@{host}:"
            f"{parts.get('port') or 5432}/{parts.get('dbname') or 'default database'}")


def check_url(url: str) -> str:
    """The URI's description, or ValueError with libpq's one-line reason."""
    try:
        return describe(url)
    except psycopg.ProgrammingError as error:
        raise ValueError(f"database is not a PostgreSQL URI or conninfo: {one_line(error)}"
                         ) from None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class PostgresStore:
    """The rounds in PostgreSQL, shared by several collectors: the database decides
    which of two collectors stores a round (INSERT ... ON CONFLICT), so they never disagree."""
    def __init__(self, url: str) -> None:
        self.url = url
        self.name = describe(url)
        self.lock = threading.Lock()
        self.expired = 0
        self.db: psycopg.Connection[TupleRow] | None = None
        self.retry_at = 0.0
        # A database down at start is logged; requests are answered 503 until it answers.
        with self.lock, contextlib.suppress(StoreUnavailable):
            self._connection()

    def _connect(self) -> psycopg.Connection[TupleRow]:
        db = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                             tcp_user_timeout=STATEMENT_TIMEOUT * 2000,
                             options=f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}",
                             application_name="zk-collector")
        try:
            prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _connection(self) -> psycopg.Connection[TupleRow]:
        if self.db is not None:
            return self.db
        if time.monotonic() < self.retry_at:
            raise StoreUnavailable(f"{self.name} unreachable")
        try:
            self.db = self._connect()
        except (psycopg.Error, StoreUnavailable) as error:
            self.retry_at = time.monotonic() + RECONNECT_EVERY
            log.warning("cannot use %s: %s; answering 503 until it can", self.name,
                        one_line(error))
            raise StoreUnavailable(f"{self.name} unreachable") from None
        log.info("connected to %s", self.name)
        return self.db

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """The connection, under the lock; a lost one is dropped, to be replaced later."""
        with self.lock:
            db = self._connection()
            try:
                yield db
            except LOST as error:
                log.warning("lost %s: %s", self.name, one_line(error))
                db.close()
                self.db = None
                raise StoreUnavailable(f"{self.name} lost") from None

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None

    def add(self, item: Round, now: float | None = None) -> tuple[Outcome, int | None]:
        """As Store.add, the database deciding between concurrent collectors."""
        received_at = time.time() if now is None else now
        with self._session() as db, db.transaction():
            known = self._known(db, item)
            if known is not None:
                return Outcome.DUPLICATE, known
            if item.epoch is not None:
                fence: tuple[int] | None = db.execute(
                    RAISE_FENCE, (*item.lineage, item.epoch)).fetchone()
                if fence is not None and fence[0] > item.epoch:
                    # The fence's lock waited for any write of this lineage, so a round
                    # stored meanwhile is seen now, and is a duplicate, as Store.add says.
                    known = self._known(db, item)
                    return ((Outcome.STALE_EPOCH, fence[0]) if known is None
                            else (Outcome.DUPLICATE, known))
            inserted: tuple[int] | None = db.execute(INSERT_ROUND, (
                item.fleet, item.incarnation, item.round, item.epoch, item.leader, item.mean,
                item.count, item.min, item.max, item.measured_at, received_at,
                item.source)).fetchone()
            if inserted is None:  # stored meanwhile by a write without an epoch
                return Outcome.DUPLICATE, self._known(db, item)
            db.execute(COUNT_LINEAGE, (*item.lineage, received_at, received_at))
            db.cursor().executemany(ROLL_UP, [
                {"fleet": item.lineage[0], "span": span, "at": received_at, "mean": item.mean,
                 "low": item.mean if item.min is None else item.min,
                 "high": item.mean if item.max is None else item.max} for span in SPANS])
            return Outcome.STORED, inserted[0]

    @staticmethod
    def _known(db: psycopg.Connection[TupleRow], item: Round) -> int | None:
        if item.round is None:
            return None
        row: tuple[int] | None = db.execute(KNOWN_ROUND,
                                            (*item.lineage, item.round)).fetchone()
        return None if row is None else row[0]

    def latest(self, limit: int, before_id: int | None = None,
               fleet: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "before": before_id, "fleet": fleet}
        if fleet is not None:
            query = (FLEET_ROUNDS + (FLEET_BEFORE if before_id is not None else "")
                     + " ORDER BY received_at DESC, id DESC LIMIT %(limit)s")
        else:
            query = (SELECT_ROUNDS + (" WHERE id < %(before)s" if before_id is not None
                                      else "") + " ORDER BY id DESC LIMIT %(limit)s")
        with self._session() as db:
            rows = db.execute(query, params).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def summary(self) -> dict[str, Any]:
        with self._session() as db:
            return summarize(db.execute(NEWEST).fetchone(), db.execute(FENCES).fetchall(),
                             db.execute(FLEETS).fetchall())

    def known_fleet(self, fleet: str) -> bool:
        with self._session() as db:
            return db.execute("SELECT 1 FROM lineages WHERE fleet = %s LIMIT 1",
                              (fleet,)).fetchone() is not None

    def series(self, fleet: str, range_name: str, now: float | None = None) -> dict[str, Any]:
        at = time.time() if now is None else now
        with self._session() as db:
            return series(db, fleet, RANGES[range_name], at, QUERIES)

    def forget(self, before: float, limit: int) -> int:
        """One step of retention (retention.py), in one transaction."""
        with self._session() as db, db.transaction():
            deleted = 0
            for (fleet,) in db.execute("SELECT DISTINCT fleet FROM lineages").fetchall():
                victims = Counter(incarnation for (incarnation,) in db.execute(
                    FORGET, (fleet, before, limit - deleted)).fetchall())
                for incarnation, count in victims.items():
                    db.execute("UPDATE lineages SET rounds = rounds - %s WHERE fleet = %s "
                               "AND incarnation = %s", (count, fleet, incarnation))
                self._forget_rollups(db, fleet, before)
                deleted += sum(victims.values())
                if deleted >= limit:
                    break
            self.expired += deleted
        return deleted

    @staticmethod
    def _forget_rollups(db: psycopg.Connection[TupleRow], fleet: str, before: float) -> None:
        """As retention.forget_rollups: the buckets that end before the cutoff and the
        fleet's oldest round left."""
        row = db.execute("SELECT min(received_at) FROM rounds WHERE coalesce(fleet, '') = %s",
                         (fleet,)).fetchone()
        oldest = None if row is None else row[0]
        until = before if oldest is None else min(before, oldest)
        db.cursor().executemany(
            "DELETE FROM rollups WHERE fleet = %s AND span = %s AND bucket <= %s - %s",
            [(fleet, span, until, span) for span in SPANS])
