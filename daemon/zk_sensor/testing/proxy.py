"""A ZooKeeper-aware TCP proxy that injects faults inside a client's conversation.

Stopping, killing or pausing a server (zookeeper.py) covers the coarse faults: a
server gone, a session expired.  The failures that break coordination code are
finer and hit one request/reply exchange:

* a lost reply: a write committed, but the connection broke before its reply
  reached the client.  ZooKeeper calls the outcome "unknown"; a naive retry
  then fails with NodeExists or creates a second sequential node;
* a slow commit: the reply arrives after the caller's own timeout, and every
  later reply and notification on that connection waits behind it;
* a dropped watch: a notification that never arrives, so a client that does
  not re-read misses a change.

Signals and firewall rules cannot aim at one request, so this proxy sits
between a kazoo client and one real server, reads just enough of the jute wire
format to know which request each client frame is (xid, opcode, paths) and
which server frame answers it, and applies the rules a test registers.
Everything else is forwarded byte for byte, so the server and the client see a
genuine ZooKeeper session.

Paths are matched as they travel on the wire: a chrooted client's paths
include its chroot.

    proxy = ZkProxy(zk_hosts).start()
    client = KazooClient(hosts=proxy.address)
    rule = proxy.cut_after("create", "/app/lock")
    ...
    proxy.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from zk_sensor.testing.ports import LOOPBACK, free_ports

log = logging.getLogger("zkproxy")

PathSpec = str | re.Pattern[str] | None
Action = Literal["cut", "delay", "drop"]

# Opcodes of ZooDefs.OpCode, grouped under the names the rules use.
OPCODES: dict[str, frozenset[int]] = {
    "create": frozenset({1, 15, 19, 21}),  # create, create2, createContainer, createTTL
    "delete": frozenset({2}),
    "exists": frozenset({3}),
    "get": frozenset({4}),
    "set": frozenset({5}),
    "children": frozenset({8, 12}),  # getChildren, getChildren2
    "sync": frozenset({9}),
    "check": frozenset({13}),
    "multi": frozenset({14}),
    "multi_read": frozenset({22}),
    "ping": frozenset({11}),
}
OP_NAMES: dict[int, str] = {code: name for name, codes in OPCODES.items() for code in codes}
MULTI_OPCODES = OPCODES["multi"] | OPCODES["multi_read"]
# Watcher.Event.EventType values of the four data/child events.
EVENTS: dict[str, int] = {"created": 1, "deleted": 2, "changed": 3, "child": 4}
EVENT_NAMES: dict[int, str] = {code: name for name, code in EVENTS.items()}
NOTIFICATION_XID = -1

_INT = struct.Struct("!i")
_LONG = struct.Struct("!q")
_REPLY_HEADER = struct.Struct("!iqi")  # xid, zxid, err
# A length beyond this is not ZooKeeper talking (jute.maxbuffer is ~1 MB by default).
MAX_FRAME = 64 * 1024 * 1024
UPSTREAM_CONNECT_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 5.0
BIND_ATTEMPTS = 5


class MalformedFrame(ValueError):
    """A frame ended early or held a field this parser does not understand."""


class _Reader:
    """Cursor over one frame's payload, reading jute's big-endian primitives."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._data = data
        self._offset = offset

    def _take(self, size: int) -> bytes:
        if size < 0 or self._offset + size > len(self._data):
            raise MalformedFrame(f"{size} bytes wanted at offset {self._offset}")
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def int32(self) -> int:
        value: int = _INT.unpack(self._take(_INT.size))[0]
        return value

    def int64(self) -> int:
        value: int = _LONG.unpack(self._take(_LONG.size))[0]
        return value

    def boolean(self) -> bool:
        return self._take(1) != b"\x00"

    def buffer(self) -> bytes:
        """A jute buffer; length -1 (null) reads as empty."""
        length = self.int32()
        return b"" if length == -1 else self._take(length)

    def ustring(self) -> str:
        """A jute ustring; null reads as empty."""
        return self.buffer().decode("utf-8", errors="replace")


def _skip_acl(reader: _Reader) -> None:
    for _ in range(reader.int32()):
        reader.int32()  # perms
        reader.ustring()  # scheme
        reader.ustring()  # id


def _skip_create(reader: _Reader) -> None:
    reader.buffer()
    _skip_acl(reader)
    reader.int32()  # flags


def _skip_create_ttl(reader: _Reader) -> None:
    _skip_create(reader)
    reader.int64()  # ttl


def _skip_set_data(reader: _Reader) -> None:
    reader.buffer()
    reader.int32()  # version


# What follows the path in each sub-op record of a multi/multiRead
# (MultiOperationRecord.deserialize): needed to find the next MultiHeader.
_SUBOP_REST: dict[int, Callable[[_Reader], object]] = {
    1: _skip_create,
    15: _skip_create,
    19: _skip_create,
    21: _skip_create_ttl,
    2: lambda reader: reader.int32(),  # delete: version
    5: _skip_set_data,
    13: lambda reader: reader.int32(),  # check: version
    4: lambda reader: reader.boolean(),  # getData: watch
    8: lambda reader: reader.boolean(),  # getChildren: watch
}


def _multi_paths(reader: _Reader) -> tuple[str, ...]:
    """Paths of every sub-op, read up to the terminating header (done=true)."""
    paths: list[str] = []
    while True:
        op_type = reader.int32()
        done = reader.boolean()
        reader.int32()  # err
        if done:
            return tuple(paths)
        skip_rest = _SUBOP_REST.get(op_type)
        if skip_rest is None:
            raise MalformedFrame(f"unknown sub-op type {op_type} in a multi")
        paths.append(reader.ustring())
        skip_rest(reader)


@dataclass(frozen=True)
class Request:
    """What the proxy knows of one client request: enough to match rules and its reply."""

    xid: int
    opcode: int
    paths: tuple[str, ...]

    @property
    def op(self) -> str | None:
        return OP_NAMES.get(self.opcode)

    def describe(self) -> str:
        name = self.op or f"opcode {self.opcode}"
        return f"{name} {', '.join(self.paths) or '-'} (xid {self.xid})"


def parse_request(payload: bytes) -> Request | None:
    """Decode a request frame's header and paths; None if even the header is missing.

    A body that does not parse yields no paths rather than an error: the proxy
    must keep forwarding what it does not understand.
    """
    reader = _Reader(payload)
    try:
        xid, opcode = reader.int32(), reader.int32()
    except MalformedFrame:
        return None
    paths: tuple[str, ...] = ()
    try:
        if opcode in MULTI_OPCODES:
            paths = _multi_paths(reader)
        elif opcode in OP_NAMES and opcode not in OPCODES["ping"]:  # the rest lead with a path
            paths = (reader.ustring(),)
    except MalformedFrame as exc:
        log.debug("no paths for xid %d opcode %d: %s", xid, opcode, exc)
    return Request(xid, opcode, paths)


def parse_notification(payload: bytes) -> tuple[int, str] | None:
    """(event type, path) of a watch notification frame, or None if it is not one."""
    reader = _Reader(payload)
    try:
        if reader.int32() != NOTIFICATION_XID:
            return None
        reader.int64()  # zxid
        reader.int32()  # err
        event_type = reader.int32()
        reader.int32()  # keeper state
        return event_type, reader.ustring()
    except MalformedFrame:
        return None


def _reply_header(payload: bytes) -> tuple[int, int, int] | None:
    """(xid, zxid, err) of a server frame, or None if it is too short to have one."""
    if len(payload) < _REPLY_HEADER.size:
        return None
    return _REPLY_HEADER.unpack_from(payload)


class Rule:
    """One fault, applied to matching traffic until used up or cancelled.

    A match claims one of `times` at once (so two connections cannot both
    take the last one); `count` and `fired` move when the fault is applied,
    which for a cut or a delay is when the reply comes back.  A claimed
    request whose connection dies before its reply still uses up its claim.
    """

    def __init__(
        self,
        action: Action,
        kinds: frozenset[int] | None,
        path: PathSpec,
        times: int,
        seconds: float = 0.0,
    ) -> None:
        if times == 0 or times < -1:
            raise ValueError(f"times must be positive or -1 (forever), got {times}")
        self.action = action
        self.seconds = seconds
        self._kinds = kinds
        self._path = path
        self._remaining = times
        self._lock = threading.Lock()
        self.fired = threading.Event()
        self.count = 0

    def __repr__(self) -> str:
        kinds = "any" if self._kinds is None else sorted(self._kinds)
        return f"<Rule {self.action} {kinds} path={self._path!r} acted {self.count}x>"

    def cancel(self) -> None:
        """Retire the rule; a request it already claimed still gets the fault."""
        with self._lock:
            self._remaining = 0

    def _path_matches(self, paths: tuple[str, ...]) -> bool:
        if self._path is None:
            return True
        if isinstance(self._path, str):
            return self._path in paths
        return any(self._path.search(path) for path in paths)

    def _claim(self, kind: int, paths: tuple[str, ...]) -> bool:
        if self._kinds is not None and kind not in self._kinds:
            return False
        if not self._path_matches(paths):
            return False
        with self._lock:
            if self._remaining == 0:
                return False
            if self._remaining > 0:
                self._remaining -= 1
            return True

    def _acted(self) -> None:
        with self._lock:
            self.count += 1
        self.fired.set()


@dataclass(frozen=True)
class _Pending:
    request: Request
    rule: Rule | None


class _ConnectionOver(Exception):
    """A peer closed its socket, mid-frame or between frames, or spoke garbage."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 16))
        if not chunk:
            raise _ConnectionOver(f"peer closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def _read_frame(sock: socket.socket) -> bytes:
    """One length-prefixed frame's payload."""
    (length,) = _INT.unpack(_recv_exact(sock, _INT.size))
    if not 0 <= length <= MAX_FRAME:
        raise _ConnectionOver(f"frame length {length} is not ZooKeeper's")
    return _recv_exact(sock, length)


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_INT.pack(len(payload)) + payload)


class _Connection:
    """One client connection and its own upstream connection to the server.

    Two threads pump it: requests up (recording each in a FIFO before sending
    it), replies and notifications down (matching each reply to its request by
    xid).  A fault only ever blocks the down pump of its own connection.
    """

    def __init__(self, proxy: ZkProxy, number: int, client: socket.socket) -> None:
        self.name = f"#{number}"
        self._proxy = proxy
        self._client = client
        self._upstream: socket.socket | None = None
        self._pending: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"zkproxy{self.name}-up", daemon=True)

    def close(self) -> None:
        """Break both sockets; the pumps notice, and `_run` releases the descriptors.

        shutdown() rather than close(): it wakes a thread blocked in recv/send
        on the socket, and the descriptor cannot be reused under it.
        """
        with self._lock:
            self._closed.set()
            sockets = [sock for sock in (self._client, self._upstream) if sock is not None]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        try:
            upstream = socket.create_connection(
                self._proxy.upstream, timeout=UPSTREAM_CONNECT_TIMEOUT_S
            )
        except OSError as exc:
            log.info("%s: upstream %s unreachable: %s", self.name, self._proxy.upstream, exc)
            self._client.close()
            self._proxy._forget(self)
            return
        upstream.settimeout(None)
        # If severed while connecting, the client socket is already shut down, so
        # the up pump ends at once and its close() then reaches `upstream` too.
        with self._lock:
            self._upstream = upstream
        down = threading.Thread(
            target=self._guarded, args=(self._pump_down, upstream),
            name=f"zkproxy{self.name}-down", daemon=True,
        )
        down.start()
        self._guarded(self._pump_up, upstream)
        down.join()
        self._client.close()
        upstream.close()
        self._proxy._forget(self)

    def _guarded(self, pump: Callable[[socket.socket], None], upstream: socket.socket) -> None:
        """Run a pump; whichever way it ends, the whole connection ends with it."""
        try:
            pump(upstream)
        except (OSError, _ConnectionOver) as exc:
            log.debug("%s: %s ended: %s", self.name, pump.__name__, exc)
        except Exception:
            log.exception("%s: %s failed", self.name, pump.__name__)
        finally:
            self.close()

    def _pump_up(self, upstream: socket.socket) -> None:
        _send_frame(upstream, _read_frame(self._client))  # ConnectRequest, untouched
        while True:
            payload = _read_frame(self._client)
            request = parse_request(payload)
            rule = None
            if request is not None:
                rule = self._proxy._match_request(request)
                with self._lock:
                    self._pending.append(_Pending(request, rule))
            _send_frame(upstream, payload)
            if rule is not None and rule.action == "cut":
                self._discard_client_frames()
                return

    def _discard_client_frames(self) -> None:
        """After a cut request, deliver nothing more: it is the last one that lands.

        The client's frames are still read (so its own close is noticed) until
        the cut ends the connection, but requests it sent in the meantime never
        reach the server, which keeps a test's "what landed" exact.
        """
        while True:
            request = parse_request(_read_frame(self._client))
            log.debug("%s: not delivered after a cut: %s", self.name, request)

    def _pump_down(self, upstream: socket.socket) -> None:
        _send_frame(self._client, _read_frame(upstream))  # ConnectResponse, untouched
        while True:
            payload = _read_frame(upstream)
            if not self._deliver(payload):
                return

    def _deliver(self, payload: bytes) -> bool:
        """Forward one server frame, or apply the fault due; False ends the connection."""
        header = _reply_header(payload)
        if header is not None and header[0] == NOTIFICATION_XID:
            if self._proxy._drops_notification(payload, self.name):
                return True
        elif header is not None:
            pending = self._take_pending(header[0])
            if pending is not None and pending.rule is not None:
                return self._apply(pending.rule, pending.request, header, payload)
        _send_frame(self._client, payload)
        return True

    def _apply(
        self, rule: Rule, request: Request, header: tuple[int, int, int], payload: bytes
    ) -> bool:
        _, zxid, err = header
        outcome = f"zxid {zxid:#x}, err {err}"
        if rule.action == "cut":
            self._proxy._record(
                rule, f"{self.name}: cut after {request.describe()}: reply ({outcome}) dropped, "
                "connection closed",
            )
            return False
        self._proxy._record(
            rule, f"{self.name}: holding reply to {request.describe()} ({outcome}) "
            f"for {rule.seconds:g} s",
        )
        if self._closed.wait(rule.seconds):
            return False
        _send_frame(self._client, payload)
        return True

    def _take_pending(self, xid: int) -> _Pending | None:
        """Remove and return the oldest outstanding request with this xid.

        Replies come back in request order, so this is normally the head; the
        search only keeps an unexpected order from mismatching every later reply.
        """
        with self._lock:
            for index, pending in enumerate(self._pending):
                if pending.request.xid == xid:
                    del self._pending[index]
                    return pending
        log.debug("%s: reply xid %d matches no outstanding request", self.name, xid)
        return None


class ZkProxy:
    """A fault-injecting proxy in front of one ZooKeeper server (see the module docstring).

    Rules are checked in the order they were added and a request takes at
    most one of them.  `history` lists every fault applied, for failure
    messages.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        if not host or not port.isdigit() or "," in upstream or "/" in upstream:
            raise ValueError(
                f"upstream must be one server's host:port, got {upstream!r}; "
                "put one proxy in front of each server of an ensemble"
            )
        self.upstream = (host, int(port))
        self.history: list[str] = []
        self._lock = threading.Lock()
        self._request_rules: list[Rule] = []
        self._notification_rules: list[Rule] = []
        self._connections: set[_Connection] = set()
        self._numbers = itertools.count(1)
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def __repr__(self) -> str:
        state = self.address if self._listener is not None else "not listening"
        return f"ZkProxy({state} -> {self.upstream[0]}:{self.upstream[1]})"

    def __enter__(self) -> ZkProxy:
        return self if self._listener is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """"127.0.0.1:PORT", to put in a client's connect string."""
        if self._listener is None:
            raise RuntimeError(f"{self!r} is not started")
        return f"{LOOPBACK}:{self._listener.getsockname()[1]}"

    def start(self) -> ZkProxy:
        """Listen on a free loopback port and start accepting clients."""
        if self._listener is not None:
            raise RuntimeError(f"{self!r} is already started")
        self._listener = self._bind()
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(self._listener,), name="zkproxy-accept", daemon=True
        )
        self._acceptor.start()
        return self

    @staticmethod
    def _bind() -> socket.socket:
        """A listening socket on a port from ports.free_ports.

        Taking the port from the harness, not from bind(0), keeps it out of
        the set reserved for ZooKeeper servers, which may restart on theirs.
        Another process can still grab the port between probe and bind, hence
        the retries.
        """
        error: OSError | None = None
        for _ in range(BIND_ATTEMPTS):
            (port,) = free_ports(1)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.bind((LOOPBACK, port))
                listener.listen(64)
                return listener
            except OSError as exc:
                listener.close()
                error = exc
        raise OSError(f"no free loopback port after {BIND_ATTEMPTS} attempts") from error

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError as exc:
                if self._listener is listener:  # not stop(): a real failure
                    log.warning("no longer accepting clients: %s", exc)
                return
            connection = _Connection(self, next(self._numbers), client)
            with self._lock:
                self._connections.add(connection)
            connection.thread.start()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def stop(self) -> None:
        """Stop listening, close every connection, and wait for the threads to end."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        if self._acceptor is not None:
            self._acceptor.join(JOIN_TIMEOUT_S)
        listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        for connection in connections:
            connection.thread.join(JOIN_TIMEOUT_S)

    def sever(self) -> None:
        """Close every current connection, as a network blip would; new ones are accepted."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._note(f"severed {len(connections)} connection(s)")

    def cut_after(self, op: str, path: PathSpec = None, times: int = 1) -> Rule:
        """Let the matching request land, drop its reply and close the connection.

        The client is left with ZooKeeper's unknown outcome: the server
        applied the request, the client only sees a connection loss.
        Nothing the client sends after that request reaches the server.
        """
        return self._add_request_rule(Rule("cut", _opcodes(op), path, times))

    def delay_reply(
        self, op: str, path: PathSpec = None, seconds: float = 1.5, times: int = 1
    ) -> Rule:
        """Hold the matching reply for `seconds`, and everything behind it on that connection.

        The request is applied at once; only the client's view is late, as
        with a slow network or a server that answers slowly.
        """
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
        return self._add_request_rule(Rule("delay", _opcodes(op), path, times, seconds))

    def drop_notification(
        self, path: PathSpec = None, event: str | None = None, times: int = 1
    ) -> Rule:
        """Swallow matching watch notifications ("created", "deleted", "changed", "child")."""
        if event is None:
            kinds = None
        elif event in EVENTS:
            kinds = frozenset({EVENTS[event]})
        else:
            raise ValueError(f"unknown event {event!r}; known: {sorted(EVENTS)}")
        rule = Rule("drop", kinds, path, times)
        with self._lock:
            self._notification_rules.append(rule)
        return rule

    def _add_request_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self._request_rules.append(rule)
        return rule

    def _match_request(self, request: Request) -> Rule | None:
        with self._lock:
            for rule in self._request_rules:
                if rule._claim(request.opcode, request.paths):
                    return rule
        return None

    def _drops_notification(self, payload: bytes, connection: str) -> bool:
        """Apply the first notification rule that claims this frame; True if dropped."""
        notification = parse_notification(payload)
        if notification is None:
            return False
        event_type, path = notification
        with self._lock:
            rule = next(
                (r for r in self._notification_rules if r._claim(event_type, (path,))), None
            )
        if rule is None:
            return False
        event = EVENT_NAMES.get(event_type, f"type {event_type}")
        self._record(rule, f"{connection}: dropped notification {event} {path}")
        return True

    def _record(self, rule: Rule, text: str) -> None:
        self._note(text)
        rule._acted()

    def _note(self, text: str) -> None:
        log.info("%s", text)
        with self._lock:
            self.history.append(text)


def _opcodes(op: str) -> frozenset[int]:
    try:
        return OPCODES[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; known: {sorted(OPCODES)}") from None


__all__ = [
    "EVENTS",
    "OPCODES",
    "MalformedFrame",
    "Request",
    "Rule",
    "ZkProxy",
    "parse_notification",
    "parse_request",
]
