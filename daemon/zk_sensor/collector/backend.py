"""What the collector asks of its store, whichever database holds the rounds.

SQLite (store.py) is the embedded default: one collector, one file. PostgreSQL
(postgres.py) is the store several collectors share, so that losing a collector's machine
loses no round: the others, behind the same address, go on writing to the same database.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zk_sensor.collector.store import Outcome, Round


class StoreUnavailable(Exception):
    """The database cannot be reached now (a shared store only): the request is answered
    503, a daemon keeps the round in its outbox and sends it again."""


class RoundStore(Protocol):
    """What the WSGI application needs of a store, so SQLite and PostgreSQL are
    interchangeable behind it."""
    expired: int

    def add(self, item: Round, now: float | None = None) -> tuple[Outcome, int | None]: ...

    def latest(self, limit: int, before_id: int | None = None,
               fleet: str | None = None) -> list[dict[str, Any]]: ...

    def summary(self) -> dict[str, Any]: ...

    def known_fleet(self, fleet: str) -> bool: ...

    def series(self, fleet: str, range_name: str,
               now: float | None = None) -> dict[str, Any]: ...

    def forget(self, before: float, limit: int) -> int: ...

    def close(self) -> None: ...


def open_store(database: str, db: str) -> RoundStore:
    """PostgreSQL when `database` (a libpq URI) is set, else the SQLite file `db`. The
    PostgreSQL driver is imported only then: a SQLite collector never loads it."""
    if database:
        from zk_sensor.collector.postgres import PostgresStore
        return PostgresStore(database)
    from zk_sensor.collector.store import Store
    return Store(Path(db))
