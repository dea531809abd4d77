"""The shared store's tables in PostgreSQL: SQLite's tables and keys (schema.py tells why
each exists) in PostgreSQL's types, and the version in a table of its own.

Several collectors share the database and may start together; the first to take the
advisory lock creates the tables, the others find them. There is one schema version so
far, so nothing to upgrade: a database holding another version is refused rather than
written in a layout this collector does not know.
"""

import logging

import psycopg
from psycopg.rows import TupleRow

from zk_sensor.collector.backend import StoreUnavailable

log = logging.getLogger("zk_collector")

VERSION = 1
# pg_advisory_xact_lock key: collectors starting together create the tables once.
SCHEMA_LOCK = 0x7A6B_636F_6C6C

SCHEMA = (
    """CREATE TABLE rounds (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, fleet TEXT, round BIGINT,
        epoch BIGINT, leader TEXT, mean DOUBLE PRECISION NOT NULL, count BIGINT,
        min DOUBLE PRECISION, max DOUBLE PRECISION, measured_at DOUBLE PRECISION,
        received_at DOUBLE PRECISION NOT NULL, source TEXT NOT NULL, incarnation TEXT)""",
    """CREATE UNIQUE INDEX rounds_key ON rounds
        ((coalesce(fleet, '')), (coalesce(incarnation, '')), round) WHERE round IS NOT NULL""",
    "CREATE INDEX rounds_time ON rounds ((coalesce(fleet, '')), received_at)",
    """CREATE TABLE fences (fleet TEXT NOT NULL, incarnation TEXT NOT NULL,
        epoch BIGINT NOT NULL, PRIMARY KEY (fleet, incarnation))""",
    """CREATE TABLE lineages (fleet TEXT NOT NULL, incarnation TEXT NOT NULL,
        rounds BIGINT NOT NULL, first_at DOUBLE PRECISION NOT NULL,
        last_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (fleet, incarnation))""",
    """CREATE TABLE rollups (fleet TEXT NOT NULL, span INTEGER NOT NULL, bucket BIGINT NOT NULL,
        rounds BIGINT NOT NULL, mean_sum DOUBLE PRECISION NOT NULL,
        low DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (fleet, span, bucket))""",
    "CREATE TABLE zk_collector_schema (version INTEGER NOT NULL)",
)


def prepare(db: psycopg.Connection[TupleRow]) -> None:
    """Create the tables unless a collector already did; refuse a newer schema."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        if db.execute("SELECT to_regclass('zk_collector_schema')").fetchone() == (None,):
            for statement in SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO zk_collector_schema (version) VALUES (%s)", (VERSION,))
            log.info("created the collector's tables (schema %d)", VERSION)
            return
        row = db.execute("SELECT max(version) FROM zk_collector_schema").fetchone()
        if row is None or row[0] != VERSION:
            raise StoreUnavailable(f"the database holds schema {row and row[0]}, this "
                                   f"collector knows {VERSION}: upgrade the collector")
