"""The stand-in itself (zk_sensor.testing.memory): the test hooks the other fast tests rely
on. Its ZooKeeper semantics are checked against a real server in tests/test_memory_zk.py."""

import pytest

from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk
from zk_sensor.zk.errors import (
    ZK_ERRORS,
    AccessRefused,
    BadVersionError,
    NodeExistsError,
    StepBudgetSpent,
)
from zk_sensor.zk.interface import ConnectionState


def test_a_lost_request_applies_nothing_and_a_lost_reply_applies_it(zk: MemoryZk) -> None:
    zk.lose_request("create", "/a")
    with pytest.raises(ZK_ERRORS):
        zk.create("/a", b"1")
    assert zk.exists("/a") is None
    zk.lose_reply("create", "/a")
    with pytest.raises(ZK_ERRORS):
        zk.create("/a", b"1")
    assert zk.get("/a")[0] == b"1"
    assert zk.create("/b") == "/b", "a fault fires once"


def test_a_fault_matches_its_operation_and_path_pattern_only(zk: MemoryZk) -> None:
    zk.ensure_path("/f/outbox")
    fault = zk.lose_request("commit", "/f/outbox/*", times=2)
    zk.create("/f/outbox/x")
    transaction = zk.transaction()
    transaction.set_data("/f/outbox", b"s")
    assert zk.commit(transaction) == [zk.exists("/f/outbox")]
    transaction = zk.transaction()
    transaction.delete("/f/outbox/x")
    with pytest.raises(ZK_ERRORS):
        zk.commit(transaction)
    assert fault.fired == 1 and zk.exists("/f/outbox/x") is not None


def test_a_failed_multi_applies_nothing_and_fires_no_watch(ensemble: MemoryEnsemble,
                                                          zk: MemoryZk) -> None:
    other = ensemble.client()
    zk.create("/a", b"0")
    events: list[object] = []
    other.get("/a", watch=events.append)
    transaction = zk.transaction()
    transaction.set_data("/a", b"1")
    transaction.create("/a/b")
    transaction.check("/a", 0)
    results = zk.commit(transaction)
    assert [type(item).__name__ for item in results] == [
        "RolledBackError", "RolledBackError", "BadVersionError"]
    assert zk.get("/a")[0] == b"0" and zk.exists("/a/b") is None and events == []
    with pytest.raises(ValueError):
        zk.commit(transaction)


def test_watches_fire_once_synchronously_with_the_event(ensemble: MemoryEnsemble,
                                                        zk: MemoryZk) -> None:
    other = ensemble.client()
    zk.create("/a")
    events: list[object] = []
    other.children("/a", watch=events.append)
    zk.create("/a/1")
    zk.create("/a/2")
    assert [(event.type, event.path) for event in events] == [("CHILD", "/a")]


def test_watch_data_calls_back_at_once_and_on_every_change(zk: MemoryZk) -> None:
    seen: list[bytes | None] = []
    handle = zk.watch_data("/k", seen.append)
    zk.create("/k", b"1")
    zk.set("/k", b"2")
    zk.delete("/k")
    handle.stop()  # type: ignore[attr-defined]
    zk.create("/k", b"3")
    assert seen == [None, b"1", b"2", None]


def test_an_expired_session_loses_its_ephemerals_and_gets_a_new_one(
        ensemble: MemoryEnsemble, zk: MemoryZk) -> None:
    states: list[ConnectionState] = []
    zk.on_state(states.append)
    old = zk.session_id
    zk.create("/e", ephemeral=True)
    zk.create("/p")
    zk.expire()
    assert zk.exists("/e") is None and zk.exists("/p") is not None
    assert states == [ConnectionState.LOST, ConnectionState.CONNECTED]
    assert zk.session_id != old
    assert zk.create("/e", ephemeral=True) == "/e"
    assert zk.exists("/e").ephemeralOwner == zk.session_id


def test_a_suspended_connection_fails_calls_and_keeps_the_session(zk: MemoryZk) -> None:
    zk.create("/e", ephemeral=True)
    zk.suspend()
    with pytest.raises(ZK_ERRORS):
        zk.exists("/e")
    zk.resume()
    assert zk.exists("/e") is not None


def test_a_refused_znode_is_refused_to_all_but_super(ensemble: MemoryEnsemble,
                                                    zk: MemoryZk) -> None:
    zk.create("/r", b"x")
    ensemble.refuse("/r")
    with pytest.raises(AccessRefused):
        zk.get("/r")
    refused: set[str] = set()
    assert zk.get_many(["/r"], refused) == {} and refused == {"/r"}
    assert ensemble.client(super_user=True).get("/r")[0] == b"x"
    zk.delete("/r")


def test_a_spent_step_budget_fails_before_sending(zk: MemoryZk) -> None:
    zk.begin_step(0.0)
    with pytest.raises(StepBudgetSpent):
        zk.create("/a")
    zk.begin_step(None)
    assert zk.exists("/a") is None


def test_versions_and_names_are_checked(zk: MemoryZk) -> None:
    zk.create("/a", b"")
    with pytest.raises(NodeExistsError):
        zk.create("/a")
    with pytest.raises(BadVersionError):
        zk.set("/a", b"x", version=3)
    assert zk.set("/a", b"x", version=0).version == 1
    assert not zk.create_if_missing("/a") and zk.create_if_missing("/b")


def test_a_lost_session_calls_its_watches_with_a_none_event_as_kazoo_does(
        ensemble: MemoryEnsemble, zk: MemoryZk) -> None:
    zk.create("/a")
    events: list[object] = []
    zk.get("/a", watch=events.append)
    zk.children("/a", watch=events.append)
    seen: list[bytes | None] = []
    zk.watch_data("/a", seen.append)
    zk.expire()
    assert [(event.type, event.path) for event in events] == [("NONE", None)] * 2, \
        "once per kind it was set for, as kazoo's reset calls it"
    ensemble.client().set("/a", b"after")
    assert len(events) == 2, "forgotten"
    assert seen[-1] == b"after", "a data watch is set again on the new session"
