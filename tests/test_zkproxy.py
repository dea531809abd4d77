"""zkproxy.ZkProxy against a real ZooKeeper: each fault does what it promises.

Every test looks at both sides: the client that goes through the proxy, and a
direct client that tells what really happened on the server.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import CheckVersion, Create, Delete, SetData, Transaction
from kazoo.protocol.states import EventType, KazooState, WatchedEvent
from kazoo.security import OPEN_ACL_UNSAFE

from zk_sensor.testing.fleet import wait_for
from zk_sensor.testing.proxy import Request, ZkProxy, parse_request
from zk_sensor.testing.zookeeper import LOOPBACK, MakeZk
from zk_sensor.zk.client import KazooZk

# Long enough that no session expires while a test holds or cuts a connection.
SESSION_TIMEOUT_S = 10.0
# kazoo's first reconnect comes after 0.1-0.5 s; the rest is headroom for a loaded box.
RECONNECT_S = 10.0
EVENT_S = 10.0
HOLD_S = 1.5
# The caller's own patience in the late-reply case: well inside HOLD_S.
CALLER_TIMEOUT_S = 0.5
# Timer granularity: a held reply may be measured a hair short of HOLD_S.
TIMING_SLACK_S = 0.1


@pytest.fixture
def proxy(zk_hosts: str) -> Iterator[ZkProxy]:
    """A proxy in front of the shared server.

    List it before `make_zk` in a test's arguments: fixtures are torn down in
    reverse, so clients then say goodbye through the proxy before it stops.
    """
    with ZkProxy(zk_hosts) as running:
        yield running


@pytest.fixture
def proxied(proxy: ZkProxy, make_zk: MakeZk) -> KazooClient:
    """A client that reaches the server only through `proxy`."""
    return make_zk(proxy.address, timeout=SESSION_TIMEOUT_S)


@pytest.fixture
def direct(zk_hosts: str, make_zk: MakeZk) -> KazooClient:
    """A client straight to the server: the ground truth."""
    return make_zk(zk_hosts)


def test_cut_after_create_lands_the_znode_but_the_client_only_sees_a_connection_loss(
    proxy: ZkProxy, proxied: KazooClient, direct: KazooClient, make_zk: MakeZk,
    zk_namespace: str,
) -> None:
    bystander = make_zk(proxy.address, timeout=SESSION_TIMEOUT_S)
    bystander_states: list[KazooState] = []
    bystander.add_listener(bystander_states.append)
    node = f"{zk_namespace}/lock"
    session_id = proxied.client_id[0]
    rule = proxy.cut_after("create", node)

    proxied.create(f"{zk_namespace}/elsewhere")  # another path: untouched
    with pytest.raises(ConnectionLoss):
        proxied.create(node, b"mine", ephemeral=True)

    assert rule.count == 1, proxy.history
    stat = direct.exists(node)
    assert stat is not None, f"the create should have landed; {proxy.history}"
    assert stat.ephemeralOwner == session_id
    wait_for(lambda: proxied.connected, RECONNECT_S, "the cut client to reconnect")
    assert proxied.client_id[0] == session_id, "a cut connection must not cost the session"
    assert proxied.get(node)[0] == b"mine"
    assert bystander.exists(node) is not None
    assert bystander_states == [], "another connection through the proxy was disturbed"


def test_cut_after_multi_matches_any_sub_op_and_the_transaction_lands(
    proxy: ZkProxy, proxied: KazooClient, direct: KazooClient, zk_namespace: str
) -> None:
    base, first, second = (f"{zk_namespace}/{name}" for name in ("base", "a", "b"))
    direct.create(base, b"v0")
    rule = proxy.cut_after("multi", re.compile(r"/b$"))

    untouched = proxied.transaction()
    untouched.create(first, b"a")
    assert untouched.commit() == [first]
    assert rule.count == 0, proxy.history
    # The matching path comes last, so the proxy must step over every earlier record.
    transaction = proxied.transaction()
    transaction.set_data(base, b"v1")
    transaction.check(base, 1)
    transaction.delete(first)
    transaction.create(second, b"b")
    with pytest.raises(ConnectionLoss):
        transaction.commit()

    assert rule.count == 1, proxy.history
    assert direct.get(base)[0] == b"v1"
    assert direct.exists(first) is None
    assert direct.exists(second) is not None, f"the transaction should have landed; {proxy.history}"


def test_cut_after_multi_read_matches_a_sub_op_path(
    proxy: ZkProxy, proxied: KazooClient, direct: KazooClient, zk_namespace: str
) -> None:
    paths = [f"{zk_namespace}/r{i}" for i in range(3)]
    for path in paths:
        direct.create(path, b"r")
    rule = proxy.cut_after("multi_read", paths[-1])

    with pytest.raises(ConnectionLoss):
        KazooZk(proxied, deadline=5.0).get_many(paths)

    assert rule.count == 1, proxy.history


def test_delay_reply_holds_the_reply_and_everything_behind_it(
    proxy: ZkProxy, proxied: KazooClient, direct: KazooClient, zk_namespace: str
) -> None:
    node = f"{zk_namespace}/slow"
    direct.create(node, b"v0")
    rule = proxy.delay_reply("set", node, seconds=HOLD_S)
    start = time.monotonic()

    write = proxied.set_async(node, b"late")
    with pytest.raises(KazooTimeoutError):
        write.get(timeout=CALLER_TIMEOUT_S)
    wait_for(rule.fired.is_set, EVENT_S, "the server's reply to reach the proxy")
    assert direct.get(node)[0] == b"late", "the write commits while its reply is held"

    read_done: list[float] = []

    def read() -> None:
        proxied.get(node)
        read_done.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stat = write.get(timeout=HOLD_S + EVENT_S)
    write_elapsed = time.monotonic() - start
    reader.join(EVENT_S)

    assert stat.version == 1, "the late reply still reaches the client"
    assert write_elapsed >= HOLD_S - TIMING_SLACK_S, f"reply came after {write_elapsed:.2f} s"
    assert read_done, "the read never completed"
    read_elapsed = read_done[0] - start
    assert read_elapsed >= HOLD_S - TIMING_SLACK_S, (
        f"a read sent behind the held reply came back after {read_elapsed:.2f} s"
    )
    assert rule.count == 1, proxy.history


def test_drop_notification_swallows_exactly_one_change_event(
    proxy: ZkProxy, proxied: KazooClient, direct: KazooClient, zk_namespace: str
) -> None:
    node, sentinel = f"{zk_namespace}/watched", f"{zk_namespace}/sentinel"
    direct.create(node, b"v0")
    direct.create(sentinel, b"s0")
    node_events: list[WatchedEvent] = []
    sentinel_events: list[WatchedEvent] = []

    def on_node(event: WatchedEvent) -> None:
        node_events.append(event)

    rule = proxy.drop_notification(node, "changed")
    proxied.get(node, watch=on_node)
    proxied.get(sentinel, watch=sentinel_events.append)
    direct.set(node, b"v1")
    direct.set(sentinel, b"s1")

    # The server sends notifications in change order and kazoo runs watch callbacks
    # in arrival order, so once the sentinel's ran, the node's would have run too.
    wait_for(lambda: sentinel_events, EVENT_S, "the sentinel's change notification")
    assert node_events == [], f"the first change was not dropped; {proxy.history}"
    assert rule.count == 1

    proxied.get(node, watch=on_node)  # re-arm: the server's one-shot watch was spent
    direct.set(node, b"v2")
    wait_for(lambda: node_events, EVENT_S, f"the second change notification; {proxy.history}")
    assert node_events[0].type == EventType.CHANGED
    assert rule.count == 1


def test_sever_is_a_blip_that_the_session_survives(
    proxy: ZkProxy, proxied: KazooClient, direct: KazooClient, zk_namespace: str
) -> None:
    node = f"{zk_namespace}/ephemeral"
    proxied.create(node, ephemeral=True)
    session_id = proxied.client_id[0]
    states: list[KazooState] = []
    proxied.add_listener(states.append)

    proxy.sever()

    wait_for(lambda: KazooState.CONNECTED in states, RECONNECT_S, "the client to reconnect")
    assert states == [KazooState.SUSPENDED, KazooState.CONNECTED], proxy.history
    assert proxied.client_id[0] == session_id
    stat = direct.exists(node)
    assert stat is not None and stat.ephemeralOwner == session_id
    assert proxy.history == ["severed 1 connection(s)"]


def test_a_peer_dying_mid_frame_ends_only_its_own_connection(
    proxy: ZkProxy, proxied: KazooClient, zk_namespace: str
) -> None:
    port = int(proxy.address.rpartition(":")[2])
    with socket.create_connection((LOOPBACK, port), timeout=EVENT_S) as raw:
        raw.sendall(struct.pack("!i", 48) + b"\x00" * 10)  # half a ConnectRequest
        raw.shutdown(socket.SHUT_WR)
        assert raw.recv(1) == b"", "the proxy should close a connection cut mid-frame"
    assert proxied.exists(zk_namespace) is not None


def test_stop_closes_connections_and_ends_every_thread(zk_hosts: str) -> None:
    with ZkProxy(zk_hosts) as proxy:
        raw = socket.create_connection(_socket_address(proxy), timeout=EVENT_S)
        wait_for(lambda: "zkproxy#1-down" in _proxy_threads(), EVENT_S, "the connection to pump")
    with raw:
        assert raw.recv(1) == b"", "stop() should close the client's connection"
    assert _proxy_threads() == [], "stop() should end the proxy's threads"


def _socket_address(proxy: ZkProxy) -> tuple[str, int]:
    host, _, port = proxy.address.rpartition(":")
    return host, int(port)


def _proxy_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("zkproxy")]


def _sub_op(op_type: int, record: bytes) -> bytes:
    return struct.pack("!iBi", op_type, 0, -1) + record


def _path_and_watch(path: str) -> bytes:
    """A GetDataRequest or GetChildrenRequest: path, then the watch flag."""
    return struct.pack("!i", len(path)) + path.encode() + b"\x00"


MULTI_END = struct.pack("!iBi", -1, 1, -1)


def test_parse_request_steps_over_every_kind_of_sub_op_and_tolerates_garbage() -> None:
    acl = OPEN_ACL_UNSAFE
    write = Transaction(
        [Create("/a", b"x", acl, 0), Delete("/b", -1), SetData("/c", b"y", 3),
         CheckVersion("/d", 3)]
    ).serialize()
    frame = struct.pack("!ii", 7, 14) + bytes(write)
    assert parse_request(frame) == Request(7, 14, ("/a", "/b", "/c", "/d"))

    ttl_create = bytes(Create("/ttl", b"", acl, 5).serialize()) + struct.pack("!q", 60_000)
    ttl = _sub_op(21, ttl_create) + _sub_op(2, bytes(Delete("/e", -1).serialize())) + MULTI_END
    assert parse_request(struct.pack("!ii", 8, 14) + ttl).paths == ("/ttl", "/e")
    reads = _sub_op(8, _path_and_watch("/k")) + _sub_op(4, _path_and_watch("/g")) + MULTI_END
    assert parse_request(struct.pack("!ii", 9, 22) + reads).paths == ("/k", "/g")

    assert parse_request(frame[:-6]) == Request(7, 14, ())
    assert parse_request(b"\x00\x00") is None
