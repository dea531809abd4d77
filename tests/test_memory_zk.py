"""The in-memory ZooKeeper (zk_sensor.testing.memory) against a real server: one scenario
script, run on a MemoryZk and on a KazooZk, must observe the same. This is what keeps the
fast tier (tests/fast) honest: the stand-in's semantics are ZooKeeper's where the fleet
relies on them (names, versions, stats, errors, multi results, watches, ephemerals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.security import make_acl

from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk
from zk_sensor.testing.zookeeper import ZkEnsemble
from zk_sensor.zk.client import KazooZk
from zk_sensor.zk.errors import ZK_ERRORS, AccessRefused
from zk_sensor.zk.interface import ConnectionState, Permissions, Zk

Observed = list[tuple[Any, ...]]


def outcome(call: Callable[[], Any]) -> str:
    """A call's outcome by name: "ok" or its exception's class."""
    try:
        call()
    except (*ZK_ERRORS, AccessRefused) as error:
        return type(error).__name__
    return "ok"


def wait_events(events: list[Any], count: int, timeout: float = 5.0) -> None:
    """A real server's notices arrive on kazoo's thread; the stand-in's are already in."""
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def scenario(one: Zk, other: Zk, base: str, close_one: Callable[[], None],
             shut_out: Callable[[str], None]) -> Observed:
    """`one` and `other`: two sessions on one ensemble; `base`: an empty znode to work in;
    `shut_out(path)`: create `path` with an ACL that refuses everyone READ.
    Returns what a client can observe, with paths relative to `base` and zxids as
    differences (absolute zxids differ from server to server)."""
    seen: Observed = []

    def rel(path: str) -> str:
        return path[len(base):]

    # Create: the path, the first stat.
    path = one.create(f"{base}/p", b"v")
    stat = one.exists(path)
    assert stat is not None
    seen.append(("create", rel(path), stat.version, stat.cversion, stat.aversion,
                 stat.dataLength, stat.numChildren, stat.ephemeralOwner,
                 stat.czxid == stat.mzxid == stat.pzxid))
    # Sequential names count the children ever created; the cversion counts deletes too.
    names = [one.create(f"{base}/p/s-", b"", sequence=True) for _ in range(3)]
    one.delete(names[1])
    names.append(one.create(f"{base}/p/s-", b"", sequence=True))
    seen.append(("sequence", [rel(name) for name in names]))
    parent = one.exists(path)
    last = one.exists(names[-1])
    assert parent is not None and last is not None
    seen.append(("parent", parent.cversion, parent.numChildren, parent.version,
                 parent.pzxid == last.czxid, parent.mzxid == stat.mzxid))
    # Versions.
    seen.append(("bad version", outcome(lambda: one.set(path, b"w", version=5))))
    changed = one.set(path, b"ww", version=0)
    seen.append(("set", changed.version, changed.dataLength, changed.mzxid > changed.czxid,
                 changed.czxid == stat.czxid))
    seen.append(("delete bad version", outcome(lambda: one.delete(names[0], version=3))))
    # The server's refusals.
    seen.append(("refusals",
                 outcome(lambda: one.delete(path)),
                 outcome(lambda: one.delete(f"{base}/nothing")),
                 outcome(lambda: one.create(path, b"")),
                 outcome(lambda: one.create(f"{base}/no/parent", b"")),
                 outcome(lambda: one.get(f"{base}/nothing")),
                 outcome(lambda: one.children(f"{base}/nothing"))))
    # Every write request is a transaction, a refused one too.
    first = one.create(f"{base}/m1")
    outcome(lambda: one.create(f"{base}/m1"))
    second = one.create(f"{base}/m2")
    first_stat, second_stat = one.exists(first), one.exists(second)
    assert first_stat is not None and second_stat is not None
    seen.append(("zxids", second_stat.czxid - first_stat.czxid))
    # Multi: all or nothing, and kazoo's results list either way.
    transaction = one.transaction()
    transaction.create(f"{base}/x", b"1")
    transaction.set_data(f"{base}/nothing", b"")
    transaction.create(f"{base}/y", b"1")
    results = one.commit(transaction)
    seen.append(("multi failed", [type(item).__name__ for item in results],
                 one.exists(f"{base}/x") is None))
    transaction = one.transaction()
    transaction.check(path, 0)
    transaction.create(f"{base}/x", b"1")
    results = one.commit(transaction)
    seen.append(("multi bad check", [type(item).__name__ for item in results]))
    transaction = one.transaction()
    transaction.check(path, 1)
    transaction.create(f"{base}/x", b"1")
    transaction.create(f"{base}/x/z", b"2")
    transaction.set_data(path, b"www", version=1)
    transaction.delete(first)
    results = one.commit(transaction)
    x_stat, z_stat = one.exists(f"{base}/x"), one.exists(f"{base}/x/z")
    assert x_stat is not None and z_stat is not None
    seen.append(("multi done", results[0], rel(results[1]), rel(results[2]),
                 results[3].version, results[4], x_stat.czxid == z_stat.czxid,
                 results[3].mzxid == x_stat.czxid))
    # Sequential creates in one multi take consecutive names.
    transaction = one.transaction()
    transaction.create(f"{base}/p/s-", b"", sequence=True)
    transaction.create(f"{base}/p/q", b"")
    transaction.delete(f"{base}/p/q")
    transaction.create(f"{base}/p/s-", b"", sequence=True)
    seen.append(("multi sequence", [item if item is True else rel(item)
                                    for item in one.commit(transaction)]))
    # A znode whose ACL refuses us: reads refused, get_many tells it apart, DELETE is
    # checked on the parent.
    locked = f"{base}/locked"
    shut_out(locked)
    refused: set[str] = set()
    found = one.get_many([locked, path, f"{base}/nothing"], refused)
    seen.append(("refused", outcome(lambda: one.get(locked)),
                 outcome(lambda: one.get_many([locked])), one.exists(locked) is not None,
                 sorted(rel(item) for item in refused), sorted(rel(item) for item in found),
                 found[f"{base}/nothing"], outcome(lambda: one.delete(locked))))
    # A refused operation inside a multi refuses the whole; a failed multi is a
    # transaction too (it takes a zxid); an ACL change bumps aversion only.
    shut_out(f"{base}/locked2")
    transaction = one.transaction()
    transaction.create(f"{base}/n1", b"")
    transaction.set_data(f"{base}/locked2", b"x")
    before = one.create(f"{base}/z1")
    seen.append(("multi refused", outcome(lambda: one.commit(transaction)),
                 one.exists(f"{base}/n1") is None))
    after = one.create(f"{base}/z2")
    acls, acl_stat = one.get_acls(path)
    changed_acl = one.set_acls(path, acls)
    z1, z2 = one.exists(before), one.exists(after)
    assert z1 is not None and z2 is not None
    seen.append(("zxid of a refused multi", z2.czxid - z1.czxid,
                 changed_acl.aversion - acl_stat.aversion,
                 changed_acl.version == acl_stat.version,
                 changed_acl.mzxid == acl_stat.mzxid))
    # Ephemerals: owned by their session, childless, gone with it.
    ephemeral = one.create(f"{base}/e", b"", ephemeral=True)
    owner = one.exists(ephemeral)
    assert owner is not None
    seen.append(("ephemeral", owner.ephemeralOwner == one.session_id,
                 outcome(lambda: one.create(f"{ephemeral}/child", b"")),
                 outcome(lambda: other.create(f"{base}/e", b""))))
    # Watches: one-shot, typed, with the path.
    events: list[Any] = []
    other.get(path, watch=events.append)
    other.exists(f"{base}/later", watch=events.append)
    other.children(f"{base}/x", watch=events.append)
    other.exists(ephemeral, watch=events.append)
    other.get(second, watch=events.append)
    other.exists(second, watch=events.append)
    other.children(second, watch=events.append)
    one.delete(second)
    one.set(path, b"4")
    one.set(path, b"5")
    one.create(f"{base}/later", b"")
    one.create(f"{base}/x/z2", b"")
    one.create(f"{base}/x/z3", b"")
    wait_events(events, 5)
    close_one()
    wait_events(events, 6)
    time.sleep(0.2 if isinstance(other, KazooZk) else 0)
    seen.append(("events", sorted((event.type, rel(event.path)) for event in events)))
    seen.append(("ephemeral gone", other.exists(ephemeral) is None,
                 sorted(other.children(base))))
    return seen


CREATE_ONLY = [make_acl("world", "anyone", create=True)]


def shut_out_in_memory(ensemble: MemoryEnsemble, zk: MemoryZk, path: str) -> None:
    zk.create(path, b"{}", acl=CREATE_ONLY)
    ensemble.refuse(path, Permissions.ALL & ~Permissions.CREATE)


def test_the_stand_in_observes_what_a_real_server_does(zk_hosts: str, zk_namespace: str,
                                                       make_zk) -> None:
    ensemble = MemoryEnsemble()
    memory_one, memory_other = ensemble.client(), ensemble.client()
    memory_one.ensure_path("/t")
    in_memory = scenario(memory_one, memory_other, "/t", memory_one.close,
                         lambda path: shut_out_in_memory(ensemble, memory_other, path))

    client: KazooClient = make_zk(zk_hosts)
    real_one, real_other = KazooZk(client, 5.0), KazooZk(make_zk(zk_hosts), 5.0)
    on_server = scenario(real_one, real_other, zk_namespace, real_one.close,
                         lambda path: client.create(path, b"{}", acl=CREATE_ONLY))

    for memory_line, server_line in zip(in_memory, on_server, strict=True):
        assert memory_line == server_line


def test_the_scenario_runs_on_the_stand_in_alone() -> None:
    """The same script without a server (what the fast tier relies on, in one place)."""
    ensemble = MemoryEnsemble()
    one: MemoryZk = ensemble.client()
    one.ensure_path("/t")
    other = ensemble.client()
    seen = {line[0]: line[1:] for line in scenario(
        one, other, "/t", one.close, lambda path: shut_out_in_memory(ensemble, other, path))}
    assert seen["sequence"] == (["/p/s-0000000000", "/p/s-0000000001", "/p/s-0000000002",
                                 "/p/s-0000000003"],)
    assert seen["refused"] == ("AccessRefused", "AccessRefused", True, ["/locked"],
                               ["/nothing", "/p"], None, "ok")
    assert seen["multi failed"] == (["RolledBackError", "NoNodeError",
                                     "RuntimeInconsistency"], True)


def suspension(zk: Zk, base: str, suspend: Callable[[], None],
               states: list[ConnectionState]) -> Observed:
    """What a client sees of its own watches when its connection drops."""
    events: list[Any] = []
    zk.create(f"{base}/w", b"")
    zk.get(f"{base}/w", watch=events.append)
    zk.exists(f"{base}/w", watch=events.append)
    zk.children(f"{base}/w", watch=events.append)
    zk.exists(f"{base}/later", watch=events.append)
    suspend()
    wait_events(events, 3, timeout=20.0)
    return [("states", states[:1]),
            ("events", sorted((event.type, event.path) for event in events))]


def test_a_dropped_connection_resets_the_watches_as_the_stand_in_does(tmp_path) -> None:
    ensemble = MemoryEnsemble()
    memory = ensemble.client()
    memory_states: list[ConnectionState] = []
    memory.on_state(memory_states.append)
    memory.ensure_path("/t")
    in_memory = suspension(memory, "/t", memory.suspend, memory_states)

    server = ZkEnsemble(tmp_path / "zk", n=1)
    server.start()
    client = KazooClient(hosts=server.hosts, timeout=4.0)
    try:
        server.wait_serving()
        client.start(timeout=10)
        real = KazooZk(client, 5.0)
        real_states: list[ConnectionState] = []
        real.on_state(real_states.append)
        real.ensure_path("/t")
        on_server = suspension(real, "/t", server.servers[0].pause, real_states)
        server.servers[0].resume()
    finally:
        client.stop()
        client.close()
        server.stop()
    assert in_memory == on_server
