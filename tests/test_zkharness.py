"""Self-test of the ZooKeeper harness: real servers start, serve and fail over."""

from __future__ import annotations

import time

import pytest
from kazoo.protocol.states import KazooState

from zk_sensor.testing.zookeeper import MakeZk, ZkEnsemble


def test_standalone_serves(zk_standalone: ZkEnsemble, make_zk: MakeZk) -> None:
    server = zk_standalone.servers[0]
    assert server.address.startswith("127.0.0.1:")
    assert server.mode() == "standalone"
    assert server.log_file.is_file() and server.log_file.stat().st_size > 0

    client = make_zk(zk_standalone.hosts)
    client.create("/harness-selftest", b"hello", makepath=True)
    data, _ = client.get("/harness-selftest")
    assert data == b"hello"
    client.delete("/harness-selftest")


def test_namespace_exists_and_is_unique(zk_namespace: str, zk_hosts: str, make_zk: MakeZk) -> None:
    assert zk_namespace.startswith("/t-test_namespace_exists_and_is_unique-")
    client = make_zk(f"{zk_hosts}{zk_namespace}")
    client.ensure_path("/inside")
    assert client.exists("/inside") is not None


@pytest.mark.ensemble
def test_ensemble_fails_over(zk_ensemble: ZkEnsemble, make_zk: MakeZk) -> None:
    modes = sorted(zk_ensemble.modes().values())
    assert modes == ["follower", "follower", "leader"]
    assert len(zk_ensemble.followers()) == 2

    client = make_zk(zk_ensemble.hosts)
    client.create("/before", b"1")

    old_leader = zk_ensemble.leader()
    old_leader.stop()
    assert not old_leader.is_running()
    assert old_leader.mode() is None

    took = zk_ensemble.wait_serving(timeout=60)
    new_leader = zk_ensemble.leader()
    assert new_leader is not old_leader
    assert len(zk_ensemble.followers()) == 1
    print(f"re-election took {took:.2f} s")

    # The client may have been on the old leader: let it reconnect, then write.
    deadline = time.monotonic() + 30
    while client.state != KazooState.CONNECTED:
        assert time.monotonic() < deadline, f"client stuck in {client.state}"
        time.sleep(0.05)
    client.retry(client.create, "/after", b"2")
    assert client.get("/before")[0] == b"1"
    assert client.get("/after")[0] == b"2"

    # The stopped member rejoins on the same ports and data.
    old_leader.start()
    zk_ensemble.wait_serving(timeout=60)
    assert old_leader.mode() == "follower"
