"""Every ZooKeeper call with a deadline.

kazoo's blocking calls wait for the server without limit: while the connection is
suspended a request just sits in the queue. The daemon's loop must never hang that way
(the watchdog would kill it and leadership decisions would go stale), so every call goes
through the asynchronous API and waits at most `deadline` seconds.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat

ZK_ERRORS: tuple[type[Exception], ...] = (KazooException, KazooTimeoutError)


@dataclass
class Zk:
    client: KazooClient
    deadline: float

    def get(self, path: str, watch: Any = None) -> tuple[bytes, ZnodeStat]:
        return self.client.get_async(path, watch=watch).get(timeout=self.deadline)

    def children(self, path: str, watch: Any = None) -> list[str]:
        return self.client.get_children_async(path, watch=watch).get(timeout=self.deadline)

    def children_or_none(self, path: str) -> list[str]:
        """Children of a folder that may not exist yet (a fleet that never started)."""
        try:
            return self.children(path)
        except NoNodeError:
            return []

    def exists(self, path: str, watch: Any = None) -> ZnodeStat | None:
        return self.client.exists_async(path, watch=watch).get(timeout=self.deadline)

    def create(
        self, path: str, value: bytes = b"", *, ephemeral: bool = False, sequence: bool = False
    ) -> str:
        return self.client.create_async(
            path, value, ephemeral=ephemeral, sequence=sequence
        ).get(timeout=self.deadline)

    def create_if_missing(self, path: str, value: bytes = b"") -> bool:
        try:
            self.create(path, value)
        except NodeExistsError:
            return False
        return True

    def ensure_path(self, path: str) -> None:
        self.client.ensure_path_async(path).get(timeout=self.deadline)

    def set(self, path: str, value: bytes, version: int = -1) -> ZnodeStat:
        return self.client.set_async(path, value, version=version).get(timeout=self.deadline)

    def delete(self, path: str, version: int = -1) -> None:
        self.client.delete_async(path, version=version).get(timeout=self.deadline)

    def commit(self, transaction: TransactionRequest) -> list[Any]:
        return transaction.commit_async().get(timeout=self.deadline)

    def get_many(self, paths: Iterable[str]) -> dict[str, tuple[bytes, ZnodeStat] | None]:
        """Read many znodes in one pipelined burst; a znode that vanished maps to None.

        The whole burst shares one deadline: with a thousand devices this is one round
        trip's worth of latency instead of a thousand.
        """
        pending = {path: self.client.get_async(path) for path in paths}
        results: dict[str, tuple[bytes, ZnodeStat] | None] = {}
        for path, future in pending.items():
            try:
                results[path] = future.get(timeout=self.deadline)
            except NoNodeError:
                results[path] = None
        return results
