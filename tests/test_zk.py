"""The deadline-bound ZooKeeper calls against a real server, where kazoo lacks one."""

import socket
import threading

import pytest
from kazoo.client import KazooClient
from kazoo.handlers.utils import selector_select

from zk_sensor.fleet.election import Election, candidate_prefix
from zk_sensor.fleet.layout import Layout
from zk_sensor.zk.client import MULTI_READ_BATCH, KazooZk
from zk_sensor.zk.handler import PollingHandler, poll_select


def test_get_many_reads_thousands_in_multiread_batches_and_maps_missing_to_none(
    zk_hosts: str, zk_namespace: str, make_zk
) -> None:
    client: KazooClient = make_zk(zk_hosts)
    count = 2 * MULTI_READ_BATCH + 7
    paths = [f"{zk_namespace}/r{i}" for i in range(count)]
    for future in [client.create_async(path, f"v{i}".encode()) for i, path in enumerate(paths)]:
        future.get(timeout=10)
    wanted = [*paths[:5], f"{zk_namespace}/gone", *paths[5:]]
    found = KazooZk(client, deadline=5.0).get_many(wanted)
    assert list(found) == wanted
    assert found[f"{zk_namespace}/gone"] is None
    assert [found[path][0] for path in paths] == [f"v{i}".encode() for i in range(count)]
    assert found[paths[-1]][1].version == 0


def test_create_if_missing_writes_nothing_when_the_znode_exists(
    zk_hosts: str, zk_namespace: str, make_zk
) -> None:
    """A failed create still costs the quorum a transaction: a mass reconnect must not."""
    client: KazooClient = make_zk(zk_hosts)
    zk = KazooZk(client, deadline=5.0)
    assert zk.create_if_missing(f"{zk_namespace}/x", b"1")
    before = client.exists(f"{zk_namespace}/x")
    marker = client.create(f"{zk_namespace}/m1")
    first = client.exists(marker).czxid
    assert not zk.create_if_missing(f"{zk_namespace}/x", b"2")
    second = client.exists(client.create(f"{zk_namespace}/m2")).czxid
    assert second == first + 1, "only the marker may have written"
    assert client.get(f"{zk_namespace}/x")[1] == before


def test_registration_adopts_its_own_landed_candidate_and_removes_a_ghost(
    zk_hosts: str, zk_namespace: str, make_zk
) -> None:
    """A candidate create whose reply was lost (it landed under this session) is adopted,
    not duplicated; one left by another session under our id is removed."""
    client: KazooClient = make_zk(zk_hosts)
    previous_life: KazooClient = make_zk(zk_hosts)
    layout = Layout(zk_namespace)
    client.ensure_path(layout.election)
    prefix = f"{layout.election}/{candidate_prefix('a')}"
    ghost = previous_life.create(prefix, b"a", ephemeral=True, sequence=True)
    landed = client.create(prefix, b"a", ephemeral=True, sequence=True)
    election = Election(KazooZk(client, deadline=5.0), layout, "a", lambda: None)
    assert election.register() == [ghost]
    assert client.get_children(layout.election) == [landed.rsplit("/", 1)[-1]]
    assert election.candidate == landed.rsplit("/", 1)[-1]


def test_the_poll_wait_answers_as_kazoos_selector_does() -> None:
    """kazoo's connection loop must see the same readiness through either."""
    near, far = socket.socketpair()
    with near, far:
        for _ in range(2):
            for waits in (([near], [far], [], 0), ([near, far], [], [], 0.01)):
                assert poll_select(*waits) == selector_select(*waits)
            far.send(b"x")
        far.shutdown(socket.SHUT_WR)
        assert poll_select([near], [], [], 0)[0] == [near], "an end of stream is readable"
    with pytest.raises(OSError):
        poll_select([near], [], [], 0)


def test_named_watch_callbacks_run_on_the_connection_thread_the_others_queued(
    zk_hosts: str, zk_namespace: str
) -> None:
    """A named callback skips the hop through kazoo's callback thread; a recipe's (which
    may call ZooKeeper) keeps it, or it would wait for its own reply."""
    handler = PollingHandler()
    client = KazooClient(hosts=zk_hosts, handler=handler)
    client.start(timeout=10)
    seen: dict[str, str] = {}
    done = threading.Event()

    def inline(_event: object) -> None:
        seen["inline"] = threading.current_thread().name

    def queued(_event: object) -> None:
        seen["queued"] = threading.current_thread().name
        done.set()

    handler.run_inline(inline)
    try:
        path = f"{zk_namespace}/watched"
        client.create(path, b"v", makepath=True)
        client.get(path, watch=inline)
        client.exists(path, watch=queued)
        client.set(path, b"w")
        assert done.wait(10)
        assert client.get(path)[0] == b"w"
    finally:
        client.stop()
        client.close()
    assert seen["inline"] != seen["queued"]
    assert "zk_loop" in seen["inline"], "the connection thread runs kazoo's zk_loop"
