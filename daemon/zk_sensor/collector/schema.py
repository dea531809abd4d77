"""The collector's SQLite schema, and the in-place upgrade of files written by earlier
releases, so a collector upgraded over its old database keeps its history and its fences.

A fleet's ZooKeeper namespace can be deleted and rebuilt; its round numbers and epochs
then restart at 0. The incarnation id, created with the namespace, tells the two lives
apart: rounds are keyed by (fleet, incarnation, round) and fenced per (fleet, incarnation).
Older daemons send no fleet or no incarnation; an absent one is a value of its own, equal
to itself, so their rounds stay de-duplicated and fenced as before:
- in `rounds` they are NULL, and the unique index compares `coalesce(..., '')`;
- in `fences`, `lineages` and `rollups`, whose keys must compare them equal, they are ''.
'' is never a real name: the API accepts only 1-200 character fleets and 1-64 character
incarnations.

Years of rounds are tens of millions of rows, so nothing a probe or the page asks may
read them all. Two small tables, written in the same transaction as each round, answer
instead: `lineages` counts the rounds of each (fleet, incarnation) and `rollups` keeps,
per fleet and time bucket of SPANS seconds, what a chart of a long range draws.

The version lives in `PRAGMA user_version` (0: before incarnations; 1: before lineages and
rollups).
"""

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("zk_collector")

VERSION = 2

# Bucket sizes of the rollups, in seconds: five minutes for a day or a week, two hours for
# a month or a year (see series.py). A bucket starts at a multiple of its span (UTC).
SPANS = (300, 7200)

ROUNDS = """
CREATE TABLE rounds (
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
    source TEXT NOT NULL,
    incarnation TEXT
)"""

ROUNDS_KEY = """
CREATE UNIQUE INDEX rounds_key
    ON rounds (coalesce(fleet, ''), coalesce(incarnation, ''), round)
    WHERE round IS NOT NULL"""

# A fleet's rounds in arrival order: the last hour's chart, a fleet's newest rounds, and
# retention's oldest first, each a range of this index.
ROUNDS_TIME = "CREATE INDEX rounds_time ON rounds (coalesce(fleet, ''), received_at)"

FENCES = """
CREATE TABLE fences (
    fleet TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (fleet, incarnation)
)"""

# `rounds` is how many are stored now (retention subtracts what it deletes); the times
# are when the collector received the first and the newest.
LINEAGES = """
CREATE TABLE lineages (
    fleet TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    rounds INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (fleet, incarnation)
)"""

# The rounds received in [bucket, bucket + span): how many, the sum of their means, the
# lowest min and the highest max (a round without min or max counts its mean).
ROLLUPS = """
CREATE TABLE rollups (
    fleet TEXT NOT NULL,
    span INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    mean_sum REAL NOT NULL,
    low REAL NOT NULL,
    high REAL NOT NULL,
    PRIMARY KEY (fleet, span, bucket)
) WITHOUT ROWID"""


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front so that a check and the
    write it decides are never split by another writer (another thread or process)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def prepare(db: sqlite3.Connection) -> None:
    """Create the schema in a new file or bring an older one up to date, atomically: a
    crash half-way leaves the file as it was, and the next start tries again."""
    with immediate(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version >= VERSION:
            return
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rounds'"
                      ).fetchone():
            log.info("upgrading the database from schema %d to %d (reads every round once)",
                     version, VERSION)
            if version < 1:
                upgrade_from_v0(db)
            upgrade_from_v1(db)
        else:
            for statement in (ROUNDS, ROUNDS_KEY, ROUNDS_TIME, FENCES, LINEAGES, ROLLUPS):
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {VERSION}")


def upgrade_from_v0(db: sqlite3.Connection) -> None:
    """Rows and fences of the old schema all belong to the absent incarnation.

    The old fences could hold several rows for the absent fleet (NULL never conflicted
    with NULL in its primary key); the highest epoch among them is the one kept.
    """
    db.execute("ALTER TABLE rounds ADD COLUMN incarnation TEXT")
    db.execute("DROP INDEX rounds_key")
    db.execute(ROUNDS_KEY)
    db.execute("ALTER TABLE fences RENAME TO fences_v0")
    db.execute(FENCES)
    db.execute("INSERT INTO fences (fleet, incarnation, epoch) "
               "SELECT coalesce(fleet, ''), '', max(epoch) FROM fences_v0 "
               "GROUP BY coalesce(fleet, '')")
    db.execute("DROP TABLE fences_v0")


def upgrade_from_v1(db: sqlite3.Connection) -> None:
    """The counters and rollups, computed once from the history they will then follow
    (this reads every row: seconds per million, once, at the first start)."""
    for statement in (ROUNDS_TIME, LINEAGES, ROLLUPS):
        db.execute(statement)
    derive(db)


def derive(db: sqlite3.Connection) -> None:
    """Fill `lineages` and `rollups` from the rounds stored."""
    db.execute("INSERT INTO lineages (fleet, incarnation, rounds, first_at, last_at) "
               "SELECT coalesce(fleet, ''), coalesce(incarnation, ''), count(*), "
               "min(received_at), max(received_at) FROM rounds GROUP BY 1, 2")
    for span in SPANS:
        db.execute("INSERT INTO rollups (fleet, span, bucket, rounds, mean_sum, low, high) "
                   "SELECT coalesce(fleet, ''), :span, CAST(received_at / :span AS INTEGER) "
                   "* :span, count(*), sum(mean), min(coalesce(min, mean)), "
                   "max(coalesce(max, mean)) FROM rounds GROUP BY 1, 3", {"span": span})
