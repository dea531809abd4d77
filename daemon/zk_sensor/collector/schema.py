"""The collector's SQLite schema, and the in-place upgrade of files written before fleets
had incarnations, so a collector upgraded over its old database keeps its history and its
fences.

A fleet's ZooKeeper namespace can be deleted and rebuilt; its round numbers and epochs
then restart at 0. The incarnation id, created with the namespace, tells the two lives
apart: rounds are keyed by (fleet, incarnation, round) and fenced per (fleet, incarnation).
Older daemons send no fleet or no incarnation; an absent one is a value of its own, equal
to itself, so their rounds stay de-duplicated and fenced as before:
- in `rounds` they are NULL, and the unique index compares `coalesce(..., '')`;
- in `fences`, whose primary key must compare them equal, they are stored as ''.
'' is never a real name: the API accepts only 1-200 character fleets and 1-64 character
incarnations.

The version lives in `PRAGMA user_version` (0: the schema before incarnations).
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

VERSION = 1

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

FENCES = """
CREATE TABLE fences (
    fleet TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (fleet, incarnation)
)"""


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
        if db.execute("PRAGMA user_version").fetchone()[0] >= VERSION:
            return
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rounds'"
                      ).fetchone():
            upgrade_from_v0(db)
        else:
            for statement in (ROUNDS, ROUNDS_KEY, FENCES):
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
