"""Poisoned or missing coordination znodes (fleet/coordination.py, office.py, outbox.py,
readings.py): garbage costs the fleet a log line and a repair, never an exception out of
the leader, and never a round number used twice."""

import json

import pytest

from zk_sensor.fleet.coordination import prepare_namespace
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import Outcome
from zk_sensor.testing.memfleet import (
    MemFleet,
    barrier_round,
    epoch_of,
    exists,
    is_incarnation,
    outbox_released,
    outbox_rounds,
)
from zk_sensor.testing.memory import MemoryZk
from zk_sensor.zk.errors import ZK_ERRORS
from zk_sensor.zk.interface import Permissions

# What any fleet credential can write (tests/test_adversary_poison.py); the stand-in has
# no 1 MiB limit, so the oversized one is stored as the server would just take it.
POISONS = {
    "nested": b'{"round": ' + b"[" * 5000,
    "huge-int": b'{"round": ' + b"9" * 5000 + b"}",
    "oversized": b'{"round": [' + b"0," * 499_000 + b"0]}",
    "not-utf8": b'{"round": 7, "leader": "\xff\xfe"}',
    "bare-word": b"x",
}


def led(fleet: MemFleet, rounds: int = 3):
    a = fleet.node("a")
    a.lead()
    for _ in range(rounds):
        a.measure(1.0)
        assert a.close() is None
    return a


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_barrier_under_a_sitting_leader_is_repaired_at_the_right_round(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, poison: str, caplog) -> None:
    a = led(fleet)
    a.measure(1.0)
    admin.set(layout.barrier, POISONS[poison])
    assert a.close() is None, "the release is refused: the barrier moved"
    assert a.step() is None
    assert "the barrier is garbage: restoring it at round 3" in caplog.text
    assert barrier_round(a.zk, layout) in (3, 4)
    a.measure(1.0)
    a.close()
    rounds = outbox_rounds(a.zk, layout)
    assert rounds == sorted(set(rounds)) and rounds[:3] == [0, 1, 2]
    assert a.leader.office is not None


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_barrier_is_repaired_by_the_next_office(fleet: MemFleet, layout: Layout,
                                                         admin: MemoryZk, poison: str,
                                                         caplog) -> None:
    a = led(fleet)
    b = fleet.node("b")
    b.register()
    admin.set(layout.barrier, POISONS[poison])
    a.zk.expire()
    assert b.evaluate() and b.step() is None
    assert "the barrier is garbage: restoring it at round 3" in caplog.text
    assert barrier_round(b.zk, layout) == 3


def test_a_follower_logs_a_garbage_barrier_once_per_version(fleet: MemFleet, layout: Layout,
                                                            admin: MemoryZk, caplog) -> None:
    b = fleet.node("b")
    b.register()
    data, stat = b.zk.get(layout.barrier)
    assert b.view.accept(data, stat)
    admin.set(layout.barrier, POISONS["nested"])
    for _ in range(3):
        data, stat = b.zk.get(layout.barrier)
        assert not b.view.accept(data, stat)
    assert caplog.text.count("barrier znode holds garbage") == 1
    assert b.view.state is not None and b.view.state.round == 0


def test_a_deleted_barrier_is_restored_from_the_outbox_record(fleet: MemFleet, layout: Layout,
                                                              admin: MemoryZk, caplog) -> None:
    a = led(fleet)
    admin.delete(layout.barrier)
    a.leader.need_reload = True
    a.leader.view.state = None
    assert a.step() is None
    assert "the barrier is missing: restoring it at round 3" in caplog.text
    assert barrier_round(a.zk, layout) >= 3


def test_with_no_evidence_of_the_round_left_the_fleet_becomes_a_new_incarnation(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = led(fleet)
    old = a.zk.get(layout.incarnation)[0]
    b = fleet.node("b")
    b.register()
    for name in admin.children(layout.outbox):
        admin.delete(f"{layout.outbox}/{name}")
    admin.delete(layout.outbox)
    admin.delete(layout.barrier)
    a.zk.expire()
    assert b.evaluate() and b.step() is None
    new = b.zk.get(layout.incarnation)[0]
    assert new != old and is_incarnation(new)
    assert "nothing remembers the round: starting incarnation" in caplog.text
    assert barrier_round(b.zk, layout) == 0 and outbox_released(b.zk, layout) == 0


def test_a_lost_outbox_is_recreated_at_the_barrier_round(fleet: MemFleet, layout: Layout,
                                                         admin: MemoryZk, caplog) -> None:
    a = led(fleet)
    for name in admin.children(layout.outbox):
        admin.delete(f"{layout.outbox}/{name}")
    admin.delete(layout.outbox)
    a.leader.need_reload = True
    assert a.step() is None
    assert "the outbox znode is missing: recreating it" in caplog.text
    assert outbox_released(a.zk, layout) == 3 and outbox_rounds(a.zk, layout) == []
    a.measure(1.0)
    a.close()
    assert outbox_rounds(a.zk, layout) == [3]


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_epoch_ends_the_office_and_the_next_replaces_it(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, poison: str, caplog) -> None:
    a = led(fleet)
    admin.set(layout.epoch, POISONS[poison])
    a.leader.lease.since -= 100.0
    assert a.step() is not None and a.leader.office is None
    assert a.evaluate()
    if poison != "bare-word":  # an earlier release's bare leader id: its version is the epoch
        assert "the epoch znode holds garbage: replacing it" in caplog.text
    assert epoch_of(a.zk, layout) > 1
    assert a.step() is None
    a.measure(1.0)
    assert a.close() is None and barrier_round(a.zk, layout) == 4


def test_a_poison_incarnation_is_replaced_and_logged(fleet: MemFleet, layout: Layout,
                                                     admin: MemoryZk, caplog) -> None:
    a = led(fleet)
    admin.set(layout.incarnation, POISONS["not-utf8"])
    a.leader.need_reload = True
    assert a.step() is not None, "another incarnation: the office ends"
    assert a.evaluate() and a.step() is None
    assert "the fleet's incarnation znode is garbage" in caplog.text
    assert is_incarnation(a.zk.get(layout.incarnation)[0])
    assert barrier_round(a.zk, layout) == 3, "the round goes on"


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_outbox_entry_is_removed_not_delivered(fleet: MemFleet, layout: Layout,
                                                        admin: MemoryZk, poison: str,
                                                        caplog) -> None:
    a = led(fleet)
    path = layout.outbox_round(10**11)
    admin.create(path, POISONS[poison])
    a.leader.need_reload = True
    assert a.step() is None
    assert f"outbox entry {path.rsplit('/', 1)[-1]} is not a round; removing it" in caplog.text
    assert not exists(a.zk, path)
    assert set(a.courier.pending) == {0, 1, 2}


def test_a_round_stored_under_another_name_is_removed_not_delivered(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a = led(fleet)
    forged = 10**11 + 7
    path = layout.outbox_round(forged + 1)
    admin.create(path, json.dumps({"round": forged, "epoch": 1, "leader": "a", "mean": 1.0,
                                   "count": 1, "min": 1.0, "max": 1.0, "time": 1.0}).encode())
    a.leader.need_reload = True
    assert a.step() is None
    assert not exists(a.zk, path) and forged not in a.courier.pending


def test_znodes_whose_acl_shuts_the_fleet_out_are_skipped_and_removed(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = led(fleet, rounds=1)
    reading = layout.reading("locked")
    entry = layout.outbox_round(10**11 - 1)
    admin.create(reading, b"{}")
    admin.create(entry, b"{}")
    fleet.ensemble.refuse(reading, Permissions.ALL)
    fleet.ensemble.refuse(entry, Permissions.ALL)
    a.leader.need_reload = True
    a.measure(1.0)
    assert a.close() is None
    assert "garbage skipped (locked)" in caplog.text
    assert not exists(admin, entry), "deleting is checked on the parent: it goes"
    assert barrier_round(a.zk, layout) == 2 and a.leader.office is not None


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_reading_is_skipped_and_the_round_closes_over_the_others(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, poison: str, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    admin.create(layout.reading("ghost"), POISONS[poison])
    a.measure(42.0)
    assert a.close() is None
    assert "1 garbage skipped (ghost)" in caplog.text
    assert a.courier.pending[0].count == 1 and a.courier.pending[0].mean == 42.0


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-reply"])
def test_a_namespace_prepared_with_an_unknown_outcome_gets_one_incarnation(
        zk: MemoryZk, layout: Layout, landed: bool) -> None:
    zk.fail("commit", layout.incarnation, after=landed)
    with pytest.raises(ZK_ERRORS):
        prepare_namespace(zk, layout)
    assert exists(zk, layout.incarnation) is landed
    prepare_namespace(zk, layout)
    incarnation = zk.get(layout.incarnation)[0]
    prepare_namespace(zk, layout)
    assert zk.get(layout.incarnation)[0] == incarnation
    assert all(exists(zk, path) for path in (layout.epoch, layout.barrier, layout.outbox,
                                             layout.election, layout.readings))


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-reply"])
def test_a_repair_with_an_unknown_outcome_is_read_again_and_done_once(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, landed: bool) -> None:
    a = led(fleet)
    admin.set(layout.barrier, POISONS["nested"])
    a.leader.need_reload = True
    a.zk.fail("commit", layout.barrier, after=landed)
    with pytest.raises(ZK_ERRORS):
        a.step()
    assert a.leader.need_reload and a.leader.office is not None
    assert (barrier_round(admin, layout) == 3) if landed else not exists_valid(admin, layout)
    version = admin.exists(layout.barrier).version
    a.measure(1.0, round_number=3)
    assert a.step() is None
    assert admin.exists(layout.barrier).version == version + (0 if landed else 1), \
        "repaired once: a landed repair is not written again"
    assert barrier_round(admin, layout) == 3
    assert a.close() is None
    assert outbox_rounds(a.zk, layout) == [0, 1, 2, 3] and barrier_round(a.zk, layout) == 4


def exists_valid(zk: MemoryZk, layout: Layout) -> bool:
    try:
        barrier_round(zk, layout)
    except AssertionError:
        return False
    return True


def test_a_repair_whose_reply_was_lost_is_still_logged(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = led(fleet)
    admin.set(layout.barrier, POISONS["nested"])
    a.leader.need_reload = True
    a.zk.lose_reply("commit", layout.barrier)
    with pytest.raises(ZK_ERRORS):
        a.step()
    assert a.step() is None
    assert "the barrier is garbage" in caplog.text


def test_an_answered_round_someone_else_removed_does_not_wedge_the_cleanup(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a = led(fleet)
    admin.delete(layout.outbox_round(1))
    for number in (0, 1, 2):
        a.leader.on_delivery(number, Outcome.DELIVERED, "HTTP 200")
    assert a.step() is None, "the cleanup fails on the missing round: re-read"
    assert a.step() is None and a.step() is None
    assert outbox_rounds(a.zk, layout) == [] and a.leader.office is not None


def test_a_garbage_barrier_and_garbage_outbox_record_never_reuse_a_round_number(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    """With both records of the last round garbage, a leader that never saw the barrier
    restores it from the barrier's version (an upper bound): the collector would take a
    reused round number for a duplicate of a delivered round."""
    a = led(fleet, rounds=5)
    for number in range(5):  # all delivered: the outbox is empty, as it usually is
        a.leader.on_delivery(number, Outcome.DELIVERED, "HTTP 200")
    assert a.step() is None and outbox_rounds(a.zk, layout) == []
    incarnation = admin.get(layout.incarnation)[0]
    admin.set(layout.outbox, POISONS["nested"])
    admin.set(layout.barrier, POISONS["nested"])
    a.zk.expire()
    b = fleet.node("b")  # a node that never saw the barrier: nothing in its memory
    b.register()
    assert b.evaluate() and b.step() is None
    same_fleet = admin.get(layout.incarnation)[0] == incarnation
    assert not same_fleet or barrier_round(admin, layout) >= 5
