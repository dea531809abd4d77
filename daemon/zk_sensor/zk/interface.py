"""The zk/ wall as the fleet sees it: `Zk`, the calls the protocol makes (each with a
deadline), the transaction a caller fills before `Zk.commit`, a znode's stat, ACL entries
and connection states.

`Zk` is a Protocol, as Patroni's `ha.py` decides through an abstract DCS: the fleet's
logic is written against it, `client.KazooZk` implements it on a real server, and
`zk_sensor.testing.memory` implements it in memory for the fast tier. `ZnodeStat` and the
ACL types are kazoo's (plain named tuples: nothing to translate); the connection states are
ours, so the daemon's loop dispatches on an enum and not on kazoo's strings."""

import builtins
import enum
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Id, Permissions

__all__ = ["ACL", "ANYONE_ID_UNSAFE", "ConnectionState", "Id", "Permissions", "Transaction",
           "Watcher", "Zk", "ZnodeStat"]

# A one-shot watch: called once, on the client's thread, with the event that fired it.
Watcher = Callable[[Any], None]


class ConnectionState(enum.Enum):
    """The session as the client sees it: CONNECTED; SUSPENDED (the connection dropped,
    the session may still live: leadership unknown); LOST (the session expired: its
    ephemeral znodes are gone)."""

    CONNECTED = KazooState.CONNECTED
    SUSPENDED = KazooState.SUSPENDED
    LOST = KazooState.LOST


class Transaction(Protocol):
    """A multi-operation request: every operation applies, or none (ZooKeeper's multi)."""

    def create(self, path: str, value: bytes = b"", acl: list[ACL] | None = None,
               ephemeral: bool = False, sequence: bool = False) -> None: ...

    def delete(self, path: str, version: int = -1) -> None: ...

    def set_data(self, path: str, value: bytes, version: int = -1) -> None: ...

    def check(self, path: str, version: int) -> None: ...


class Zk(Protocol):
    """Every call waits at most `deadline` seconds, and no more than what is left of the
    loop step's budget (`begin_step`). Outcomes: a value (done), one of zk.errors' named
    errors (failed), `ZK_ERRORS` (unknown: it may have been applied), `AccessRefused`."""

    deadline: float
    negotiated: float | None

    @property
    def session_id(self) -> int | None: ...

    def begin_step(self, budget: float | None) -> None: ...

    def timeout(self) -> float: ...

    def get(self, path: str, watch: Watcher | None = None) -> tuple[bytes, ZnodeStat]: ...

    def watch_data(self, path: str, callback: Callable[[bytes | None], None]) -> object:
        """The first read and every change of `path` (None: no such znode), for as long as
        the caller keeps the returned handle."""

    def children(self, path: str, watch: Watcher | None = None) -> list[str]: ...

    def children_or_none(self, path: str) -> list[str]: ...

    def exists(self, path: str, watch: Watcher | None = None) -> ZnodeStat | None: ...

    def synced_exists(self, path: str) -> ZnodeStat | None: ...

    def create(self, path: str, value: bytes = b"", *, ephemeral: bool = False,
               sequence: bool = False, acl: list[ACL] | None = None) -> str: ...

    def create_if_missing(self, path: str, value: bytes = b"") -> bool: ...

    def ensure_path(self, path: str) -> None: ...

    def set(self, path: str, value: bytes, version: int = -1) -> ZnodeStat: ...

    def delete(self, path: str, version: int = -1) -> None: ...

    def get_acls(self, path: str) -> tuple[list[ACL], ZnodeStat]: ...

    def set_acls(self, path: str, acls: list[ACL]) -> ZnodeStat: ...

    def transaction(self) -> Transaction: ...

    def commit(self, transaction: Transaction) -> list[Any]: ...

    def get_many(self, paths: Iterable[str], refused: builtins.set[str] | None = None,
                 ) -> dict[str, tuple[bytes, ZnodeStat] | None]: ...
