"""Taking office (fleet/office.py) and losing it: one epoch per office, fenced by the
epoch znode's version; a leader whose epoch moved steps down (node/leader.py)."""


import pytest

from zk_sensor.fleet.coordination import read_fleet_state
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.office import take_office
from zk_sensor.fleet.outbox import Outcome
from zk_sensor.testing.memfleet import (
    MemFleet,
    epoch_holder_of,
    epoch_json,
    epoch_of,
    outbox_rounds,
)
from zk_sensor.testing.memory import MemoryZk
from zk_sensor.zk.errors import BadVersionError, NoNodeError


def test_the_first_in_line_takes_office_and_the_others_wait(fleet: MemFleet,
                                                             layout: Layout) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    assert not b.evaluate()
    assert fleet.leaders() == ["a"]
    assert epoch_of(a.zk, layout) == 1 and a.leader.office is not None
    assert epoch_holder_of(a.zk, layout) == "a"
    assert a.leader.office.version == a.zk.exists(layout.epoch).version


def test_two_would_be_leaders_with_the_same_view_cannot_both_take_office(
        fleet: MemFleet, layout: Layout) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.register()
    b.register()
    state_a = read_fleet_state(a.zk, layout)
    state_b = read_fleet_state(b.zk, layout)
    take_office(a.zk, layout, f"{layout.election}/{a.election.candidate}", "a", state_a, None)
    with pytest.raises(BadVersionError):
        take_office(b.zk, layout, f"{layout.election}/{b.election.candidate}", "b", state_b,
                    None)
    assert epoch_holder_of(a.zk, layout) == "a" and epoch_of(a.zk, layout) == 1


def test_a_candidate_whose_znode_is_gone_cannot_take_office(fleet: MemFleet,
                                                            layout: Layout, caplog) -> None:
    a = fleet.node("a")
    a.register()
    candidate = f"{layout.election}/{a.election.candidate}"
    a.zk.delete(candidate)
    with pytest.raises(NoNodeError):
        take_office(a.zk, layout, candidate, "a", read_fleet_state(a.zk, layout), None)
    assert not a.leader.try_office(candidate)
    assert "could not take office" in caplog.text
    assert epoch_of(a.zk, layout) == 0, "nothing of the attempt landed"


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-reply"])
def test_an_unknown_outcome_of_taking_office_is_retried_from_a_fresh_read(
        fleet: MemFleet, layout: Layout, landed: bool) -> None:
    a = fleet.node("a")
    a.register()
    fault = a.zk.fail("commit", layout.epoch, after=landed)
    assert not a.evaluate(), "an unknown outcome is no office"
    assert fault.fired == 1
    assert epoch_of(a.zk, layout) == (1 if landed else 0)
    assert a.evaluate()
    office = a.leader.office
    assert office is not None and office.epoch == (2 if landed else 1)
    assert office.version == a.zk.exists(layout.epoch).version, "fenced on what landed"
    assert a.step() is None and a.leader.clock is not None


def test_a_leader_whose_epoch_moved_steps_down_when_it_renews_its_lease(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    admin.set(layout.epoch, epoch_json(7, "someone"))
    a.leader.lease.since -= 100.0
    problem = a.step()
    assert problem is not None and "another leader took office" in problem
    assert a.leader.office is None and a.leader.clock is None
    assert "stepping down as leader (epoch 1)" in caplog.text


def test_a_sitting_leader_renews_its_lease_while_its_epoch_stands(fleet: MemFleet) -> None:
    a = fleet.node("a")
    a.lead()
    a.leader.lease.since -= 100.0
    assert a.step() is None
    assert a.leader.office is not None and a.leader.fresh(a.leader.lease.since + 0.1)


def test_a_deleted_epoch_znode_ends_the_office_and_comes_back_with_a_higher_number(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(1.0)
    assert a.close() is None
    admin.delete(layout.epoch)
    a.leader.need_reload = True
    assert a.step() is not None, "the election must be evaluated again"
    assert a.leader.office is None and "the epoch znode is gone" in caplog.text
    assert a.evaluate()
    assert epoch_of(a.zk, layout) == 2, "never restarts from zero"


def test_a_changed_incarnation_ends_the_office(fleet: MemFleet, layout: Layout,
                                               admin: MemoryZk, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    admin.set(layout.incarnation, b"another-fleet")
    a.leader.need_reload = True
    assert a.step() is not None
    assert a.leader.office is None and "incarnation" in caplog.text


def test_an_expired_leader_is_succeeded_and_its_stale_office_steps_down(
        fleet: MemFleet, layout: Layout, caplog) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    assert not b.evaluate()
    a.measure(1.0)
    b.measure(2.0)
    assert a.close() is None
    a.zk.expire()
    assert b.election_wakeups == 1, "the predecessor's watch woke the next in line"
    assert b.evaluate() and b.step() is None
    assert epoch_of(b.zk, layout) == 2
    assert a.leader.office is not None, "a has not noticed yet"
    assert a.close() is not None, "its next release is fenced off"
    assert a.leader.office is None and fleet.leaders() == ["b"]


def test_taking_office_again_after_a_failure_backs_off(fleet: MemFleet,
                                                       layout: Layout) -> None:
    a = fleet.node("a")
    a.register()
    a.zk.lose_request("commit")
    before = len(a.zk.calls)
    candidate = f"{layout.election}/{a.election.candidate}"
    assert not a.leader.try_office(candidate)
    assert not a.leader.try_office(candidate), "within the back-off nothing is tried"
    assert [op for op, _ in a.zk.calls[before:]].count("commit") == 1


def test_a_leader_that_resigns_is_succeeded_at_once_without_a_round_lost_or_repeated(
        fleet: MemFleet, layout: Layout) -> None:
    """SIGTERM: the leader clears what the collector took, then resigns (daemon.shutdown)."""
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    b.evaluate()
    for _ in range(2):
        a.measure(1.0)
        a.close()
    a.leader.on_delivery(0, Outcome.DELIVERED, "HTTP 200")
    a.leader.clean_outbox()
    a.leader.office = None
    a.election.resign()
    assert b.election_wakeups == 1
    assert b.evaluate() and b.step() is None
    assert set(b.courier.pending) == {1}, "round 0 was delivered: not sent again"
    b.measure(2.0)
    assert b.close() is None
    assert outbox_rounds(b.zk, layout) == [1, 2]


def test_the_leader_logs_devices_joining_and_leaving(fleet: MemFleet, caplog) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    assert a.device_wakeups == 1, "the election folder's watch told the leader"
    a.leader.devices_stale = True
    a.step()
    assert "connected devices (2): a, b (joined: b)" in caplog.text
    b.zk.expire()
    a.leader.devices_stale = True
    a.step()
    assert "connected devices (1): a (left: b)" in caplog.text


def test_a_leader_steps_down_when_its_epoch_znode_was_replaced_by_anothers(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    """An epoch znode deleted and created again starts over at the same versions: the
    office is fenced on the znode's creation too, so the deposed leader sees it (ABA)."""
    a, b = fleet.node("a"), fleet.node("b")
    a.register()
    b.register()
    admin.delete(layout.epoch)
    assert a.evaluate() and a.step() is None, "a takes office on a re-created epoch znode"
    admin.delete(layout.epoch)
    admin.delete(f"{layout.election}/{a.election.candidate}")
    assert b.evaluate() and b.step() is None, "b, first in line now, takes office"
    a.leader.lease.since -= 100.0
    a.step()
    assert a.leader.office is None, "a must see that the office is b's"
