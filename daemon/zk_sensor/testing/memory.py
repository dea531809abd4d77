"""An in-memory ZooKeeper: `interface.Zk` without a server, for the fast test tier.

A `MemoryEnsemble` is the server: one tree of znodes, one zxid counter, the sessions and
their watches. Each `MemoryZk` is a client of it with its own session (`ensemble.client()`),
implementing every call of `Zk` with ZooKeeper's semantics as the fleet relies on them:

- znodes with data, ACLs (stored and returned, not evaluated: see `refuse`) and kazoo's
  `ZnodeStat` (czxid, mzxid, pzxid, ctime/mtime in ms, version, cversion, aversion,
  ephemeralOwner, dataLength, numChildren); every write request takes the next zxid, even
  one that fails (as on a real server, where a refused write is still a transaction);
- the server's checks, in its order: the parent must exist (NoNodeError), a name is taken
  once (NodeExistsError), versions are compared unless -1 (BadVersionError), a znode with
  children is not deleted (NotEmptyError), an ephemeral znode has no children
  (NoChildrenForEphemeralsError);
- ephemeral znodes owned by their session: `ensemble.expire(session_id)` (or
  `zk.expire()`) deletes them and fires the watches of the others; the client then has a
  new session, as kazoo's reconnect gives it;
- sequential names: ten digits counting the children ever created under the parent, as
  the server appends them (its internal cversion: the cversion it reports counts the
  deletions too, so a name is NOT the reported cversion once a child was deleted);
- multi transactions, all or nothing, one zxid for the whole; the results list kazoo
  builds: create -> the path, delete and check -> True, set_data -> the ZnodeStat; on
  failure every operation gets an exception instance: RolledBackError before the failing
  one, its own error at it, RuntimeInconsistency after it (what the server answers,
  checked against a real server by tests/test_memory_zk.py);
- one-shot watches of get, exists and children: data watches (CREATED, CHANGED, DELETED)
  and child watches (CHILD on the parent, DELETED on the znode itself), called with a
  kazoo `WatchedEvent(type, state, path)`, once per session and watcher however often it
  was set. They are called SYNCHRONOUSLY, on the thread whose write fired them, after the
  write applied and outside the ensemble's lock (so a callback may call back in), and
  before that write's call returns; `watch_data` calls back at once and on every change.

Test hooks, none of them part of `Zk`:
- `zk.fail(op, path, after=...)`: the next matching call raises a ZK_ERRORS timeout,
  either before applying (`after=False`: a lost request, nothing happened) or after
  applying (`after=True`: a lost reply, it happened and the caller cannot know): the three
  outcomes done / failed / unknown are testable. `lose_request` / `lose_reply` say it
  with a name;
- `ensemble.refuse(path, perms, only=client)`: the znode's ACL shuts every client (or
  one) out of `perms` (READ by default) but the ensemble's `super` clients, as a hostile
  ACL would (ACL entries themselves are stored, never evaluated): reads
  raise AccessRefused (get_many puts the path in `refused` when given one), commits that
  touch it raise AccessRefused; as on a real server, CREATE and DELETE are checked on the
  parent, so a refused leaf can still be deleted;
- `zk.suspend()` / `zk.resume()`: a dropped connection (calls raise ConnectionLoss, the
  session and its ephemerals stay), with state listeners told SUSPENDED and CONNECTED;
  as kazoo does on SUSPENDED and LOST, the client's own watches are then called with
  `WatchedEvent("NONE", state, None)` (once per path and kind each was set for) and
  forgotten, after the `on_state` listeners; `watch_data` reads again on CONNECTED;
- `zk.calls`: every call made (method name, paths), `ensemble.dump()`: the tree's data.

Left out: ACL evaluation by scheme (digest, ip, sasl) and authentication, quotas,
containers and TTL znodes, sync/observers/read-only servers, reconfig, the 1 MiB packet
limit, the `/zookeeper` system subtree, children order (creation order here, unspecified
on a server), time passing: a deadline or step budget is only spent by the test's own
clock (`begin_step(0)` makes every call raise StepBudgetSpent).
"""

import builtins
import contextlib
import fnmatch
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    ConnectionLoss,
    InvalidACLError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
    ZookeeperError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from kazoo.security import OPEN_ACL_UNSAFE

from zk_sensor.zk.budget import StepBudget
from zk_sensor.zk.errors import AccessRefused
from zk_sensor.zk.interface import (
    ACL,
    ConnectionState,
    Permissions,
    Transaction,
    Watcher,
    Zk,
    ZnodeStat,
)

__all__ = ["Fault", "MemoryEnsemble", "MemoryTransaction", "MemoryZk"]

T = TypeVar("T")
# What a watch is kept as: the session that set it and its callback.
_Watch = tuple[int, Watcher]
# A change's notice: (data or child watches, kazoo's event type, path).
_Event = tuple[str, str, str]


@dataclass
class _Znode:
    data: bytes
    acl: list[ACL]
    czxid: int
    mzxid: int
    pzxid: int
    ctime: int
    mtime: int
    version: int = 0
    cversion: int = 0
    aversion: int = 0
    owner: int = 0
    # Children ever created: the server's own cversion, which names sequential children;
    # the cversion it reports also counts deletions (2 x created - numChildren).
    created: int = 0
    children: dict[str, None] = field(default_factory=dict)
    refused: int = 0
    # Permissions refused to one client only (`MemoryEnsemble.refuse(..., only=client)`).
    refused_to: "dict[MemoryZk, int]" = field(default_factory=dict)

    def stat(self) -> ZnodeStat:
        return ZnodeStat(self.czxid, self.mzxid, self.ctime, self.mtime, self.version,
                         self.cversion, self.aversion, self.owner, len(self.data),
                         len(self.children), self.pzxid)

    def copy(self) -> "_Znode":
        return replace(self, acl=list(self.acl), children=dict(self.children),
                       refused_to=dict(self.refused_to))


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


def _validate(path: str, sequence: bool = False) -> None:
    if not isinstance(path, str):
        raise TypeError("Invalid type for 'path' (string expected)")
    if path == "/":
        return
    body = path[:-1] if sequence and path.endswith("/") else path
    parts = body.split("/")
    if not path.startswith("/") or (path.endswith("/") and not sequence) \
            or any(part in ("", ".", "..") for part in parts[1:]) or "\x00" in path:
        raise BadArgumentsError(f"invalid path {path!r}")


class MemoryEnsemble:
    """The server side: the tree, the zxid counter, the sessions and their watches."""

    def __init__(self, session_timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.session_timeout = session_timeout
        self.clock = clock
        self.lock = threading.RLock()
        self.zxid = 0
        now = self._now()
        self.nodes: dict[str, _Znode] = {"/": _Znode(b"", list(OPEN_ACL_UNSAFE), 0, 0, 0,
                                                      now, now)}
        self.watches: dict[tuple[str, str], list[_Watch]] = {}
        self.clients: dict[int, MemoryZk] = {}
        self.super_sessions: builtins.set[int] = builtins.set()
        self._session_ids = itertools.count(0x1000_0000_0000_0001)

    # Sessions.

    def client(self, deadline: float = 5.0, *, super_user: bool = False) -> "MemoryZk":
        """A new client with a session of its own; `super_user`: ZooKeeper's break-glass
        identity, which passes every ACL check (and every `refuse`)."""
        return MemoryZk(self, deadline, super_user=super_user)

    def new_session(self, client: "MemoryZk", super_user: bool) -> int:
        with self.lock:
            session = next(self._session_ids)
            self.clients[session] = client
            if super_user:
                self.super_sessions.add(session)
            return session

    def expire(self, session: int) -> None:
        """The server expires `session`: its ephemerals go in one transaction (the other
        sessions' watches fire), and its client hears LOST (its own watches are called
        with a NONE event and dropped, as kazoo does), then CONNECTED with a new
        session."""
        with self.lock:
            client = self.clients.pop(session, None)
            self.super_sessions.discard(session)
            events, dropped = self._close(session)
        self._fire(events)
        if client is not None:
            client._session_expired(dropped)

    def _close(self, session: int) -> tuple[list[_Event], list[Watcher]]:
        events: list[_Event] = []
        owned = sorted((path for path, node in self.nodes.items() if node.owner == session),
                       key=lambda path: -path.count("/"))
        if owned:
            zxid = self._next_zxid()
            for path in owned:
                self._delete(path, -1, zxid, events)
        return events, self.drop_watches(session)

    def drop_watches(self, session: int) -> list[Watcher]:
        """Forget the session's watches; returns their callbacks as kazoo's reset calls
        them: once per path and kind it was set for, child watches first."""
        dropped: dict[str, list[Watcher]] = {"child": [], "data": []}
        with self.lock:
            for (kind, path), watches in list(self.watches.items()):
                kept = [watch for watch in watches if watch[0] != session]
                dropped[kind].extend(watcher for owner, watcher in watches if owner == session)
                if kept:
                    self.watches[kind, path] = kept
                else:
                    del self.watches[kind, path]
        return dropped["child"] + dropped["data"]

    def close_session(self, session: int) -> None:
        with self.lock:
            self.clients.pop(session, None)
            self.super_sessions.discard(session)
            events, _dropped = self._close(session)
        self._fire(events)

    # Test hooks on the tree.

    def refuse(self, path: str, perms: int = Permissions.READ, *,
               only: "MemoryZk | None" = None) -> None:
        """Make the znode's ACL refuse `perms` (NoAuth) to every client but super ones,
        or to the client `only` (an identity the ACL leaves out, others keep theirs)."""
        with self.lock:
            node = self._node(path)
            if only is None:
                node.refused |= perms
            else:
                node.refused_to[only] = node.refused_to.get(only, 0) | perms

    def refuses(self, session: int, node: _Znode, perm: int) -> bool:
        """Whether `node` refuses any of `perm` to `session`."""
        if session in self.super_sessions:
            return False
        client = self.clients.get(session)
        refused = node.refused | (node.refused_to.get(client, 0) if client else 0)
        return bool(refused & perm)

    def dump(self, path: str = "/") -> dict[str, bytes]:
        """Every znode under `path` (itself included) and its data, for assertions."""
        with self.lock:
            prefix = path.rstrip("/") + "/"
            return {name: node.data for name, node in sorted(self.nodes.items())
                    if name == path or name.startswith(prefix)}

    # The server's operations, under the lock; `events` collects the watches to fire.

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _next_zxid(self) -> int:
        self.zxid += 1
        return self.zxid

    def _node(self, path: str) -> _Znode:
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError()
        return node

    def _check_perm(self, session: int, node: _Znode, perm: int) -> None:
        if self.refuses(session, node, perm):
            raise NoAuthError()

    def _create(self, session: int, path: str, value: bytes, acl: list[ACL] | None,
                ephemeral: bool, sequence: bool, zxid: int, events: list[_Event]) -> str:
        _validate(path, sequence)
        if not isinstance(value, bytes):
            raise TypeError("Invalid type for 'value' (must be a byte string)")
        if path == "/":
            raise NodeExistsError()
        parent_path = _parent(path)
        parent = self._node(parent_path)
        self._check_perm(session, parent, Permissions.CREATE)
        if sequence:
            path = f"{path}{parent.created:010d}"
        if path in self.nodes:
            raise NodeExistsError()
        if parent.owner:
            raise NoChildrenForEphemeralsError()
        if acl is not None and not acl:
            raise InvalidACLError()
        now = self._now()
        self.nodes[path] = _Znode(value, list(acl if acl is not None else OPEN_ACL_UNSAFE),
                                  zxid, zxid, zxid, now, now,
                                  owner=session if ephemeral else 0)
        parent.children[_name(path)] = None
        parent.created += 1
        parent.cversion += 1
        parent.pzxid = zxid
        events.append(("data", EventType.CREATED, path))
        events.append(("child", EventType.CHILD, parent_path))
        return path

    def _delete(self, path: str, version: int, zxid: int, events: list[_Event],
                session: int | None = None) -> None:
        _validate(path)
        if path == "/":
            raise BadArgumentsError("the root cannot be deleted")
        parent = self._node(_parent(path))
        node = self._node(path)
        if session is not None:
            self._check_perm(session, parent, Permissions.DELETE)
        if version != -1 and version != node.version:
            raise BadVersionError()
        if node.children:
            raise NotEmptyError()
        del self.nodes[path]
        del parent.children[_name(path)]
        parent.cversion += 1
        parent.pzxid = zxid
        events.append(("data", EventType.DELETED, path))
        events.append(("child", EventType.DELETED, path))
        events.append(("child", EventType.CHILD, _parent(path)))

    def _set(self, session: int, path: str, value: bytes, version: int, zxid: int,
             events: list[_Event]) -> ZnodeStat:
        _validate(path)
        if not isinstance(value, bytes):
            raise TypeError("Invalid type for 'value' (must be a byte string)")
        node = self._node(path)
        self._check_perm(session, node, Permissions.WRITE)
        if version != -1 and version != node.version:
            raise BadVersionError()
        node.data = value
        node.version += 1
        node.mzxid = zxid
        node.mtime = self._now()
        events.append(("data", EventType.CHANGED, path))
        return node.stat()

    def _check(self, session: int, path: str, version: int) -> bool:
        _validate(path)
        node = self._node(path)
        self._check_perm(session, node, Permissions.READ)
        if version != -1 and version != node.version:
            raise BadVersionError()
        return True

    def _watch(self, kind: str, path: str, session: int, watcher: Watcher | None) -> None:
        if watcher is None:
            return
        watches = self.watches.setdefault((kind, path), [])
        if (session, watcher) not in watches:
            watches.append((session, watcher))

    def _fire(self, events: list[_Event]) -> None:
        """Outside the lock: a callback may call the ensemble again."""
        calls: list[tuple[Watcher, WatchedEvent]] = []
        with self.lock:
            for kind, event_type, path in events:
                for _session, watcher in self.watches.pop((kind, path), []):
                    calls.append((watcher, WatchedEvent(event_type, KeeperState.CONNECTED,
                                                        path)))
        for watcher, event in calls:
            watcher(event)

    def apply(self, change: Callable[[list[_Event]], T]) -> T:
        """One request: applied under the lock, then its watches fired."""
        events: list[_Event] = []
        with self.lock:
            result = change(events)
        self._fire(events)
        return result

    def multi(self, session: int, operations: list[tuple[Any, ...]]) -> list[Any]:
        """All or nothing, one zxid; kazoo's results list either way."""
        with self.lock:
            saved = {path: node.copy() for path, node in self.nodes.items()}
            zxid = self._next_zxid()
            events: list[_Event] = []
            results: list[Any] = []
            for index, (kind, *args) in enumerate(operations):
                try:
                    results.append(self._multi_op(session, kind, args, zxid, events))
                except ZookeeperError as error:  # the server's answer for this operation
                    self.nodes = saved
                    return ([RolledBackError() for _ in range(index)] + [error]
                            + [RuntimeInconsistency()
                               for _ in range(len(operations) - index - 1)])
        self._fire(events)
        return results

    def _multi_op(self, session: int, kind: str, args: list[Any], zxid: int,
                  events: list[_Event]) -> Any:
        if kind == "create":
            path, value, acl, ephemeral, sequence = args
            return self._create(session, path, value, acl, ephemeral, sequence, zxid, events)
        if kind == "delete":
            path, version = args
            self._delete(path, version, zxid, events, session)
            return True
        if kind == "set_data":
            path, value, version = args
            return self._set(session, path, value, version, zxid, events)
        path, version = args
        return self._check(session, path, version)


@dataclass
class Fault:
    """An injected unknown outcome: the next `times` calls of `op` (a `Zk` method name;
    None: any) on a path matching `path` (an fnmatch pattern, matched against every path
    a transaction touches; None: any) raise `error()` (a ZK_ERRORS timeout by default),
    before applying (`after=False`: the request was lost) or after (the reply was lost)."""

    op: str | None
    path: str | None
    after: bool
    times: int = 1
    error: Callable[[], Exception] = field(
        default=lambda: KazooTimeoutError("injected: no reply within the deadline"))
    fired: int = 0

    def matches(self, op: str, paths: Iterable[str]) -> bool:
        if self.fired >= self.times or (self.op is not None and self.op != op):
            return False
        pattern = self.path
        return pattern is None or any(fnmatch.fnmatchcase(path, pattern) for path in paths)


class MemoryTransaction:
    """`interface.Transaction`: operations recorded, applied by `MemoryZk.commit`."""

    def __init__(self, client: "MemoryZk") -> None:
        self.client = client
        self.operations: list[tuple[Any, ...]] = []
        self.committed = False

    def _add(self, *operation: Any) -> None:
        if self.committed:
            raise ValueError("Transaction already committed")
        self.operations.append(operation)

    def create(self, path: str, value: bytes = b"", acl: list[ACL] | None = None,
               ephemeral: bool = False, sequence: bool = False) -> None:
        if not isinstance(value, bytes):
            raise TypeError("Invalid type for 'value' (must be a byte string)")
        self._add("create", path, value, acl if acl is not None else self.client.default_acl,
                  ephemeral, sequence)

    def delete(self, path: str, version: int = -1) -> None:
        self._add("delete", path, version)

    def set_data(self, path: str, value: bytes, version: int = -1) -> None:
        if not isinstance(value, bytes):
            raise TypeError("Invalid type for 'value' (must be a byte string)")
        self._add("set_data", path, value, version)

    def check(self, path: str, version: int) -> None:
        self._add("check", path, version)

    @property
    def paths(self) -> list[str]:
        return [operation[1] for operation in self.operations]


class DataWatchHandle:
    """What `watch_data` returns: it calls back for as long as it is not stopped; after a
    suspension or an expiry it reads again once the client is CONNECTED, as kazoo's
    DataWatch does."""

    def __init__(self, zk: "MemoryZk", path: str,
                 callback: Callable[[bytes | None], None]) -> None:
        self.zk = zk
        self.path = path
        self.callback = callback
        self.active = True
        zk.on_state(self._on_state)
        self._arm()

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            self._arm()

    def _arm(self, event: Any = None) -> None:
        if not self.active or (event is not None and event.type == EventType.NONE):
            return
        ensemble, session = self.zk.ensemble, self.zk.session
        with ensemble.lock:
            node = ensemble.nodes.get(self.path)
            data = node.data if node is not None else None
            ensemble._watch("data", self.path, session, self._arm)
        self.callback(data)

    def stop(self) -> None:
        self.active = False


class MemoryZk(StepBudget):
    """`interface.Zk` on a `MemoryEnsemble`, one session per client."""

    def __init__(self, ensemble: MemoryEnsemble, deadline: float = 5.0, *,
                 super_user: bool = False) -> None:
        self.ensemble = ensemble
        self.deadline = deadline
        self.negotiated: float | None = ensemble.session_timeout
        self.step_ends: float | None = None
        self.default_acl: list[ACL] | None = None
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.listeners: list[Callable[[ConnectionState], None]] = []
        self.super_user = super_user
        self.suspended = False
        self.closed = False
        self.session = ensemble.new_session(self, super_user)

    # The session and the test hooks.

    @property
    def session_id(self) -> int | None:
        return None if self.closed else self.session

    @property
    def connected(self) -> bool:
        return not (self.closed or self.suspended)

    def on_state(self, callback: Callable[[ConnectionState], None]) -> None:
        self.listeners.append(callback)

    def set_default_acl(self, acl: list[ACL] | None) -> None:
        self.default_acl = acl

    def expire(self) -> None:
        """The server expires this client's session (see MemoryEnsemble.expire)."""
        self.ensemble.expire(self.session)

    def _session_expired(self, dropped: list[Watcher]) -> None:
        self._tell(ConnectionState.LOST)
        self._reset_watches(dropped, KeeperState.EXPIRED_SESSION)
        self.session = self.ensemble.new_session(self, self.super_user)
        self.suspended = False
        self._tell(ConnectionState.CONNECTED)

    def suspend(self) -> None:
        """The connection drops; the session lives on (until `expire`). As kazoo does, the
        client's watches are called with a NONE event and forgotten."""
        self.suspended = True
        self._tell(ConnectionState.SUSPENDED)
        self._reset_watches(self.ensemble.drop_watches(self.session), KeeperState.CONNECTING)

    @staticmethod
    def _reset_watches(watchers: list[Watcher], state: str) -> None:
        event = WatchedEvent(EventType.NONE, state, None)
        for watcher in watchers:
            watcher(event)

    def resume(self) -> None:
        self.suspended = False
        self._tell(ConnectionState.CONNECTED)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ensemble.close_session(self.session)

    def _tell(self, state: ConnectionState) -> None:
        for listener in list(self.listeners):
            listener(state)

    def fail(self, op: str | None = None, path: str | None = None, *, after: bool = False,
             times: int = 1, error: Callable[[], Exception] | None = None) -> Fault:
        """Inject an unknown outcome into the next matching call(s); see `Fault`."""
        fault = Fault(op, path, after, times) if error is None \
            else Fault(op, path, after, times, error)
        self.faults.append(fault)
        return fault

    def lose_request(self, op: str | None = None, path: str | None = None,
                     times: int = 1) -> Fault:
        """The call times out and nothing was applied."""
        return self.fail(op, path, after=False, times=times)

    def lose_reply(self, op: str | None = None, path: str | None = None,
                   times: int = 1) -> Fault:
        """The call is applied, then times out: the caller cannot know it landed."""
        return self.fail(op, path, after=True, times=times)

    def _call(self, op: str, paths: Iterable[str], action: Callable[[], T]) -> T:
        """Every call: the step budget, the connection, an injected fault, the action."""
        self.timeout()
        touched = tuple(paths)
        self.calls.append((op, touched))
        if self.closed:
            raise ConnectionLoss("the client is closed")
        if self.suspended:
            raise ConnectionLoss("connection suspended")
        fault = next((f for f in self.faults if f.matches(op, touched)), None)
        if fault is None:
            return action()
        fault.fired += 1
        if not fault.after:
            raise fault.error()
        with contextlib.suppress(Exception):  # the reply is lost whatever it said
            action()
        raise fault.error()

    @staticmethod
    def _refused(call: Callable[[], T]) -> T:
        try:
            return call()
        except NoAuthError as error:
            raise AccessRefused(error) from error

    # The calls (interface.Zk).

    def get(self, path: str, watch: Watcher | None = None) -> tuple[bytes, ZnodeStat]:
        def read() -> tuple[bytes, ZnodeStat]:
            with self.ensemble.lock:
                _validate(path)
                node = self.ensemble._node(path)
                self.ensemble._check_perm(self.session, node, Permissions.READ)
                self.ensemble._watch("data", path, self.session, watch)
                return node.data, node.stat()
        return self._call("get", (path,), lambda: self._refused(read))

    def watch_data(self, path: str, callback: Callable[[bytes | None], None]) -> object:
        return DataWatchHandle(self, path, callback)

    def children(self, path: str, watch: Watcher | None = None) -> list[str]:
        def read() -> list[str]:
            with self.ensemble.lock:
                _validate(path)
                node = self.ensemble._node(path)
                self.ensemble._check_perm(self.session, node, Permissions.READ)
                self.ensemble._watch("child", path, self.session, watch)
                return list(node.children)
        return self._call("children", (path,), lambda: self._refused(read))

    def children_or_none(self, path: str) -> list[str]:
        try:
            return self.children(path)
        except NoNodeError:
            return []

    def exists(self, path: str, watch: Watcher | None = None) -> ZnodeStat | None:
        return self._call("exists", (path,), lambda: self._exists(path, watch))

    def _exists(self, path: str, watch: Watcher | None) -> ZnodeStat | None:
        with self.ensemble.lock:
            _validate(path)
            self.ensemble._watch("data", path, self.session, watch)
            node = self.ensemble.nodes.get(path)
            return node.stat() if node is not None else None

    def synced_exists(self, path: str) -> ZnodeStat | None:
        return self._call("synced_exists", (path,), lambda: self._exists(path, None))

    def create(self, path: str, value: bytes = b"", *, ephemeral: bool = False,
               sequence: bool = False, acl: list[ACL] | None = None) -> str:
        ensemble = self.ensemble
        chosen = acl if acl is not None else self.default_acl

        def write() -> str:
            def change(events: list[_Event]) -> str:
                zxid = ensemble._next_zxid()
                return ensemble._create(self.session, path, value, chosen, ephemeral,
                                        sequence, zxid, events)
            return ensemble.apply(change)
        return self._call("create", (path,), lambda: self._refused(write))

    def create_if_missing(self, path: str, value: bytes = b"") -> bool:
        if self.exists(path) is not None:
            return False
        try:
            self.create(path, value)
        except NodeExistsError:
            return False
        return True

    def ensure_path(self, path: str) -> None:
        def write() -> None:
            _validate(path)
            missing: list[str] = []
            current = path
            with self.ensemble.lock:
                while current != "/" and current not in self.ensemble.nodes:
                    missing.append(current)
                    current = _parent(current)
            for each in reversed(missing):
                with contextlib.suppress(NodeExistsError):
                    self.ensemble.apply(self._creator(each))
        self._call("ensure_path", (path,), lambda: self._refused(write))

    def _creator(self, path: str) -> Callable[[list[_Event]], str]:
        def change(events: list[_Event]) -> str:
            return self.ensemble._create(self.session, path, b"", self.default_acl, False,
                                         False, self.ensemble._next_zxid(), events)
        return change

    def set(self, path: str, value: bytes, version: int = -1) -> ZnodeStat:
        ensemble = self.ensemble

        def write() -> ZnodeStat:
            return ensemble.apply(lambda events: ensemble._set(
                self.session, path, value, version, ensemble._next_zxid(), events))
        return self._call("set", (path,), lambda: self._refused(write))

    def delete(self, path: str, version: int = -1) -> None:
        ensemble = self.ensemble

        def write() -> None:
            ensemble.apply(lambda events: ensemble._delete(
                path, version, ensemble._next_zxid(), events, self.session))
        self._call("delete", (path,), lambda: self._refused(write))

    def get_acls(self, path: str) -> tuple[list[ACL], ZnodeStat]:
        def read() -> tuple[list[ACL], ZnodeStat]:
            with self.ensemble.lock:
                _validate(path)
                node = self.ensemble._node(path)
                # ZooKeeper 3.6 shows an ACL to READ or ADMIN.
                if self.ensemble.refuses(self.session, node, Permissions.READ) \
                        and self.ensemble.refuses(self.session, node, Permissions.ADMIN):
                    raise NoAuthError()
                return list(node.acl), node.stat()
        return self._call("get_acls", (path,), lambda: self._refused(read))

    def set_acls(self, path: str, acls: list[ACL]) -> ZnodeStat:
        ensemble = self.ensemble

        def change(_events: list[_Event]) -> ZnodeStat:
            _validate(path)
            ensemble._next_zxid()
            node = ensemble._node(path)
            ensemble._check_perm(self.session, node, Permissions.ADMIN)
            node.acl = list(acls)
            node.aversion += 1
            return node.stat()
        return self._call("set_acls", (path,),
                          lambda: self._refused(lambda: ensemble.apply(change)))

    def transaction(self) -> MemoryTransaction:
        return MemoryTransaction(self)

    def commit(self, transaction: Transaction) -> list[Any]:
        assert isinstance(transaction, MemoryTransaction), "a transaction of this client"
        if transaction.committed:
            raise ValueError("Transaction already committed")

        def write() -> list[Any]:
            transaction.committed = True
            results = self.ensemble.multi(self.session, transaction.operations)
            refusal = next((item for item in results if isinstance(item, NoAuthError)), None)
            if refusal is not None:
                raise AccessRefused(refusal)
            return results
        return self._call("commit", transaction.paths, write)

    def get_many(self, paths: Iterable[str], refused: builtins.set[str] | None = None,
                 ) -> dict[str, tuple[bytes, ZnodeStat] | None]:
        ordered = list(paths)

        def read() -> dict[str, tuple[bytes, ZnodeStat] | None]:
            results: dict[str, tuple[bytes, ZnodeStat] | None] = {}
            with self.ensemble.lock:
                for path in ordered:
                    _validate(path)
                    node = self.ensemble.nodes.get(path)
                    if node is None:
                        results[path] = None
                    elif self.ensemble.refuses(self.session, node, Permissions.READ):
                        if refused is None:
                            raise AccessRefused(NoAuthError())
                        refused.add(path)
                    else:
                        results[path] = (node.data, node.stat())
            return results
        return self._call("get_many", ordered, read)

    def synced_get_many(self, paths: list[str]) -> dict[str, tuple[bytes, ZnodeStat] | None]:
        return self.get_many(paths)


def _conforms(zk: MemoryZk, transaction: MemoryTransaction) -> tuple[Zk, Transaction]:
    """mypy checks here that the stand-in satisfies the Protocols the fleet is typed on."""
    return zk, transaction


def walk(zk: MemoryZk, path: str = "/") -> Iterator[str]:
    """Every znode under `path`, parents first (for assertions)."""
    yield path
    for child in sorted(zk.ensemble._node(path).children):
        yield from walk(zk, f"{path.rstrip('/')}/{child}")
