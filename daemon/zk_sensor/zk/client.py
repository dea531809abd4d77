"""Every ZooKeeper call with a deadline, and every loop step with a budget.

kazoo's blocking calls wait for the server without limit: while the connection is
suspended a request just sits in the queue. The daemon's loop must never hang that way
(the watchdog would kill it and leadership decisions would go stale), so every call goes
through the asynchronous API and waits at most `deadline` seconds, and no more than what
is left of the loop step's budget: a step that makes many calls to a slow server gives up
as a whole (an unknown outcome, which every call site handles) instead of adding up
deadlines past the watchdog.
"""

import builtins
import time
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any, cast

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import EXCEPTIONS, NoAuthError, NodeExistsError, NoNodeError
from kazoo.protocol.serialization import (
    Connect,
    GetData,
    MultiHeader,
    int_struct,
    multiheader_struct,
    read_buffer,
    stat_struct,
)
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry
from kazoo.security import ACL

from zk_sensor.zk.access import ZkAccess
from zk_sensor.zk.budget import StepBudget
from zk_sensor.zk.errors import REFUSALS, AccessRefused
from zk_sensor.zk.handler import FleetCaHandler
from zk_sensor.zk.interface import ConnectionState, Transaction, Watcher

# Paths per multiRead request: about 50 KB asked, 200 KB answered for readings, far below
# the server's 1 MB packet limit (jute.maxbuffer), while 5,000 devices still take 5 requests.
MULTI_READ_BATCH = 1000


class MultiRead(namedtuple("MultiRead", "paths")):
    """ZooKeeper's multiRead (opcode 22, servers 3.6 and later): many getData in one
    request, each answered on its own, a missing znode failing only its own entry.

    kazoo 2.11 has no multi-read, and a pipelined get per znode costs a request object, a
    future and a thread hand-off each: measured here, 1,000 readings took 260-330 ms of
    CPU that way and 11-13 ms as one multiRead. Written in kazoo's own request shape, so
    it travels through kazoo's connection like any other request.
    """

    type = 22

    def serialize(self) -> bytearray:
        buffer = bytearray()
        for path in self.paths:
            buffer.extend(MultiHeader(GetData.type, False, -1).serialize())
            buffer.extend(GetData(path, None).serialize())
        buffer.extend(multiheader_struct.pack(-1, True, -1))
        return buffer

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[tuple[bytes, ZnodeStat] | Exception]:
        results: list[tuple[bytes, ZnodeStat] | Exception] = []
        header, offset = MultiHeader.deserialize(data, offset)
        while not header.done:
            if header.type == GetData.type:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                results.append((value or b"", stat))
            else:
                code = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                results.append(EXCEPTIONS[code]())
            header, offset = MultiHeader.deserialize(data, offset)
        return results


def wait(result: Any, timeout: float) -> Any:
    """The answer of an asynchronous call, a refusal turned into AccessRefused."""
    try:
        return result.get(timeout=timeout)
    except REFUSALS as error:
        raise AccessRefused(error) from error


def new_client(hosts: str, session_timeout: float, access: ZkAccess,
               handler: FleetCaHandler | None = None, retry_deadline: float | None = None,
               ) -> KazooClient:
    """A client that reconnects for ever (backing off to 2 s) and, with `retry_deadline`,
    retries a call cut by a lost connection within that deadline, as kazoo's retry does."""
    retry = {} if retry_deadline is None else {
        "connection_retry": KazooRetry(max_tries=-1, delay=0.1, max_delay=2.0),
        "command_retry": KazooRetry(max_tries=3, deadline=retry_deadline)}
    return KazooClient(hosts=hosts, timeout=session_timeout, **retry,
                       **access.client_options(handler))


class KazooZk(StepBudget):
    """`interface.Zk` on a real ensemble, through kazoo's asynchronous API; also the
    session's life (start, state listener, stop) for the process that owns it."""

    def __init__(self, client: KazooClient, deadline: float) -> None:
        self.client = client
        self.deadline = deadline
        self.step_ends: float | None = None
        self.negotiated: float | None = None
        self._record_negotiated_timeout()

    # The session.

    def start(self, timeout: float) -> None:
        self.client.start(timeout=timeout)

    def start_in_background(self) -> None:
        """Connect without waiting: calls made before the session is up fail at once."""
        self.client.start_async()

    def close(self) -> None:
        self.client.stop()
        self.client.close()

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    @property
    def session_id(self) -> int | None:
        client_id = self.client.client_id
        return int(client_id[0]) if client_id else None

    def on_state(self, callback: Callable[[ConnectionState], None]) -> None:
        """`callback` runs on kazoo's connection thread: it must only record and wake."""
        self.client.add_listener(lambda state: callback(ConnectionState(state)))

    def set_default_acl(self, acl: list[ACL] | None) -> None:
        """What a create without an ACL of its own gets (None: kazoo's open default)."""
        self.client.default_acl = acl

    def watch_data(self, path: str, callback: Callable[[bytes | None], None]) -> DataWatch:
        """kazoo's DataWatch: it runs `callback` on kazoo's callback thread (the callback
        must only hand the bytes over)."""
        return DataWatch(self.client, path, lambda data, _stat: callback(data))

    def _record_negotiated_timeout(self) -> None:
        """kazoo uses the session timeout the server granted but does not keep it, and the
        lease must be built on it: note it from the handshake's answer, which kazoo reads
        before it reports the session as connected."""
        connection = getattr(self.client, "_connection", None)
        invoke = getattr(connection, "_invoke", None)
        if invoke is None:
            return

        def noting_timeout(timeout: float, request: Any, xid: int | None = None) -> Any:
            result = invoke(timeout, request, xid)
            if isinstance(request, Connect) and result and result[0].time_out > 0:
                self.negotiated = result[0].time_out / 1000.0
            return result

        connection._invoke = noting_timeout  # type: ignore[union-attr]

    # The calls (interface.Zk).

    def get(self, path: str, watch: Watcher | None = None) -> tuple[bytes, ZnodeStat]:
        timeout = self.timeout()
        return cast(tuple[bytes, ZnodeStat],
                    wait(self.client.get_async(path, watch=watch), timeout))

    def children(self, path: str, watch: Watcher | None = None) -> list[str]:
        timeout = self.timeout()
        return cast(list[str], wait(self.client.get_children_async(path, watch=watch), timeout))

    def children_or_none(self, path: str) -> list[str]:
        """Children of a folder that may not exist yet (a fleet that never started)."""
        try:
            return self.children(path)
        except NoNodeError:
            return []

    def exists(self, path: str, watch: Watcher | None = None) -> ZnodeStat | None:
        timeout = self.timeout()
        return cast(ZnodeStat | None,
                    wait(self.client.exists_async(path, watch=watch), timeout))

    def synced_exists(self, path: str) -> ZnodeStat | None:
        """`exists` as the quorum stands: the server this session talks to may be a
        follower already cut off from the leader, answering from a stale copy. A sync
        first makes it catch up with the quorum (or fail); the read, sent right behind it
        on the same session, is answered after it, so this is one round trip."""
        timeout = self.timeout()
        synced = self.client.sync_async(path)
        answer = self.client.exists_async(path)
        wait(synced, timeout)
        return cast(ZnodeStat | None, wait(answer, timeout))

    def create(
        self, path: str, value: bytes = b"", *, ephemeral: bool = False, sequence: bool = False,
        acl: list[ACL] | None = None,
    ) -> str:
        timeout = self.timeout()
        return cast(str, wait(self.client.create_async(
            path, value, acl=acl, ephemeral=ephemeral, sequence=sequence
        ), timeout))

    def create_if_missing(self, path: str, value: bytes = b"") -> bool:
        """A read first: a create that fails on an existing znode still costs the quorum a
        write transaction, and a mass reconnect would make thousands of them."""
        if self.exists(path) is not None:
            return False
        try:
            self.create(path, value)
        except NodeExistsError:
            return False
        return True

    def ensure_path(self, path: str) -> None:
        timeout = self.timeout()
        wait(self.client.ensure_path_async(path), timeout)

    def set(self, path: str, value: bytes, version: int = -1) -> ZnodeStat:
        timeout = self.timeout()
        return cast(ZnodeStat,
                    wait(self.client.set_async(path, value, version=version), timeout))

    def delete(self, path: str, version: int = -1) -> None:
        timeout = self.timeout()
        wait(self.client.delete_async(path, version=version), timeout)

    def get_acls(self, path: str) -> tuple[list[ACL], ZnodeStat]:
        timeout = self.timeout()
        return cast(tuple[list[ACL], ZnodeStat], wait(self.client.get_acls_async(path), timeout))

    def set_acls(self, path: str, acls: list[ACL]) -> ZnodeStat:
        timeout = self.timeout()
        return cast(ZnodeStat, wait(self.client.set_acls_async(path, acls), timeout))

    def transaction(self) -> TransactionRequest:
        return self.client.transaction()

    def commit(self, transaction: Transaction) -> list[Any]:
        assert isinstance(transaction, TransactionRequest), "a transaction of this client"
        timeout = self.timeout()
        results: list[Any] = wait(transaction.commit_async(), timeout)
        refusal = next((item for item in results if isinstance(item, REFUSALS)), None)
        if refusal is not None:
            raise AccessRefused(refusal)
        return results

    def get_many(self, paths: Iterable[str], refused: builtins.set[str] | None = None,
                 ) -> dict[str, tuple[bytes, ZnodeStat] | None]:
        """Read many znodes with multiRead requests sent back to back; a znode that
        vanished maps to None. The whole burst shares one deadline. With `refused`, a
        znode whose ACL refuses us (NoAuth) is added there instead of failing the burst:
        whoever may create a reading or an outbox entry may give it an ACL that shuts
        everyone out, and one such znode must not stop the leader for good."""
        ordered = list(paths)
        batches = [ordered[start:start + MULTI_READ_BATCH]
                   for start in range(0, len(ordered), MULTI_READ_BATCH)]
        give_up_at = time.monotonic() + self.timeout()
        pending = [(batch, self._multi_read(batch)) for batch in batches]
        results: dict[str, tuple[bytes, ZnodeStat] | None] = {}
        for batch, future in pending:
            answers = wait(future, max(0.0, give_up_at - time.monotonic()))
            for path, answer in zip(batch, answers, strict=True):
                if isinstance(answer, NoNodeError):
                    results[path] = None
                elif isinstance(answer, NoAuthError) and refused is not None:
                    refused.add(path)
                elif isinstance(answer, REFUSALS):
                    raise AccessRefused(answer)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[path] = answer
        return results

    def synced_get_many(self, paths: list[str]) -> dict[str, tuple[bytes, ZnodeStat] | None]:
        """`get_many` as the quorum stands (see synced_exists): the sync goes first, the
        reads right behind it on the same session, so they are answered after it."""
        timeout = self.timeout()
        synced = self.client.sync_async(paths[0])
        found = self.get_many(paths)
        wait(synced, timeout)
        return found

    def _multi_read(self, paths: list[str]) -> Any:
        chroot = self.client.chroot or ""
        future = self.client.handler.async_result()
        self.client._call(MultiRead([chroot + path for path in paths]), future)
        return future
