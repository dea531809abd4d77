"""Closing rounds (fleet/rounds.py, fleet/barrier.py, node/leader.py): every release has
three outcomes, and none of them may release a round twice or lose one."""

import json

import pytest

from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import Outcome
from zk_sensor.testing.memfleet import (
    MemFleet,
    barrier_json,
    barrier_round,
    epoch_json,
    outbox_released,
    outbox_rounds,
    outbox_stats,
    payload,
)
from zk_sensor.testing.memory import MemoryZk
from zk_sensor.zk.errors import ZK_ERRORS


def test_a_round_closes_once_with_the_mean_of_its_readings(fleet: MemFleet,
                                                           layout: Layout) -> None:
    a, b, c = fleet.node("a"), fleet.node("b"), fleet.node("c")
    a.lead()
    for node, value in ((a, 70.0), (b, 80.0), (c, 96.0)):
        node.register()
        node.measure(value)
    assert a.close() is None
    barrier = payload(a.zk, layout.barrier)
    assert barrier["round"] == 1 and barrier["leader"] == "a"
    assert barrier["last"]["mean"] == 82.0 and barrier["last"]["count"] == 3
    assert outbox_rounds(a.zk, layout) == [0] and outbox_released(a.zk, layout) == 1
    assert a.courier.added == [0] and a.courier.pending[0].count == 3


def test_a_reading_of_an_older_round_is_not_counted_in_this_one(fleet: MemFleet,
                                                                layout: Layout) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    a.measure(10.0)
    assert a.close() is None
    a.measure(20.0)
    b.measure(99.0, round_number=0)
    assert a.close() is None
    assert a.courier.pending[1].count == 1 and a.courier.pending[1].mean == 20.0


def test_rounds_follow_each_other_without_gaps(fleet: MemFleet, layout: Layout) -> None:
    a = fleet.node("a")
    a.lead()
    for _ in range(5):
        a.measure(1.0)
        assert a.close() is None
    assert barrier_round(a.zk, layout) == 5
    assert outbox_rounds(a.zk, layout) == [0, 1, 2, 3, 4] == a.courier.added


def test_a_release_whose_reply_was_lost_is_found_landed_and_not_released_again(
        fleet: MemFleet, layout: Layout, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(5.0)
    a.zk.lose_reply("commit", layout.barrier)
    assert a.close() is None
    assert "round 0: the release's outcome is unknown" in caplog.text
    assert a.leader.office is not None, "an unknown outcome is no reason to step down"
    assert barrier_round(a.zk, layout) == 1, "it landed"
    assert a.step() is None
    assert "round 0: its release landed after all" in caplog.text
    assert set(a.courier.pending) == {0}, "the landed round is delivered, not lost"
    a.measure(6.0)
    assert a.close() is None
    assert barrier_round(a.zk, layout) == 2
    assert outbox_rounds(a.zk, layout) == [0, 1], "each round released once"
    assert set(a.courier.pending) == {0, 1}


def test_a_release_whose_request_was_lost_is_closed_again(fleet: MemFleet, layout: Layout,
                                                          caplog) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(5.0)
    a.zk.lose_request("commit", layout.barrier)
    assert a.close() is None
    assert barrier_round(a.zk, layout) == 0
    assert a.step() is None, "the round is still due: re-read, then closed again"
    assert "round 0: its release did not land; closing it again" in caplog.text
    assert barrier_round(a.zk, layout) == 1
    assert outbox_rounds(a.zk, layout) == [0] and a.courier.added == [0]
    assert a.courier.pending[0].mean == 5.0


def test_an_unknown_outcome_of_the_reread_itself_is_retried_and_still_resolved(
        fleet: MemFleet, layout: Layout) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(5.0)
    a.zk.lose_reply("commit", layout.barrier)
    a.close()
    a.zk.lose_request("get_many")
    with pytest.raises(ZK_ERRORS):
        a.step()
    assert a.leader.unsure_round == 0 and a.leader.need_reload
    assert a.step() is None and a.leader.unsure_round is None
    a.measure(6.0)
    a.close()
    assert outbox_rounds(a.zk, layout) == [0, 1]


def test_a_release_refused_because_the_barrier_moved_rereads_and_goes_on(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    admin.set(layout.barrier, barrier_json(40))
    a.measure(1.0)
    assert a.close() is None
    assert "round 0 not closed: the barrier moved" in caplog.text
    assert a.leader.office is not None, "only an epoch move ends the office"
    assert outbox_rounds(a.zk, layout) == [], "a refused release queues nothing"
    a.measure(1.0, round_number=40)
    assert a.step() is None, "re-read, then the round the barrier shows is closed"
    assert barrier_round(a.zk, layout) == 41 and outbox_rounds(a.zk, layout) == [40]


def test_a_release_fenced_by_a_moved_epoch_steps_down_and_releases_nothing(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, caplog) -> None:
    a = fleet.node("a")
    a.lead()
    admin.set(layout.epoch, epoch_json(5, "b"))
    a.measure(1.0)
    assert a.close() is not None, "the election must be evaluated again"
    assert a.leader.office is None
    assert barrier_round(a.zk, layout) == 0 and outbox_rounds(a.zk, layout) == []
    assert "round 0 fenced off" in caplog.text


def test_a_full_outbox_drops_the_oldest_in_the_release_and_counts_it_once_logged(
        fleet: MemFleet, layout: Layout, caplog) -> None:
    a = fleet.node("a", outbox_limit=2)
    a.lead()
    for _ in range(5):
        a.measure(1.0)
        assert a.close() is None
    assert outbox_rounds(a.zk, layout) == [3, 4]
    stats = outbox_stats(a.zk, layout)
    assert (stats["dropped"], stats["released"]) == (3, 5)
    assert set(a.courier.pending) == {3, 4}, "a dropped round is not delivered"
    assert caplog.text.count("outbox full (2 rounds)") == 1


def test_answered_rounds_are_removed_and_refusals_counted(fleet: MemFleet,
                                                         layout: Layout) -> None:
    a = fleet.node("a")
    a.lead()
    for _ in range(3):
        a.measure(1.0)
        a.close()
    a.leader.on_delivery(0, Outcome.DELIVERED, "HTTP 200")
    a.leader.on_delivery(1, Outcome.REJECTED, "HTTP 400")
    assert a.step() is None
    assert outbox_rounds(a.zk, layout) == [2]
    assert outbox_stats(a.zk, layout)["rejected"] == 1
    assert set(a.courier.pending) == {2}


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-reply"])
def test_an_unknown_outcome_of_the_outbox_cleanup_neither_resends_nor_wedges_it(
        fleet: MemFleet, layout: Layout, landed: bool) -> None:
    a = fleet.node("a")
    a.lead()
    for _ in range(2):
        a.measure(1.0)
        a.close()
    a.leader.on_delivery(0, Outcome.DELIVERED, "HTTP 200")
    a.zk.fail("commit", f"{layout.outbox}/*", after=landed)
    with pytest.raises(ZK_ERRORS):
        a.step()
    assert a.leader.need_reload
    assert a.step() is None
    assert a.step() is None
    assert outbox_rounds(a.zk, layout) == [1]
    assert set(a.courier.pending) == {1}, "round 0 is not handed to the courier again"
    assert not a.leader.outbox.answered


def test_a_round_answered_after_it_was_dropped_does_not_wedge_the_cleanup(
        fleet: MemFleet, layout: Layout) -> None:
    a = fleet.node("a", outbox_limit=1)
    a.lead()
    for _ in range(2):
        a.measure(1.0)
        a.close()
    assert outbox_rounds(a.zk, layout) == [1]
    a.leader.on_delivery(0, Outcome.DELIVERED, "HTTP 200")
    a.leader.on_delivery(1, Outcome.DELIVERED, "HTTP 200")
    assert a.step() is None and a.step() is None
    assert outbox_rounds(a.zk, layout) == [] and a.leader.office is not None


def test_a_cleanup_fenced_by_a_moved_epoch_steps_down(fleet: MemFleet, layout: Layout,
                                                      admin: MemoryZk) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(1.0)
    a.close()
    a.leader.on_delivery(0, Outcome.DELIVERED, "HTTP 200")
    admin.set(layout.epoch, epoch_json(9, "b"))
    assert a.step() is not None
    assert a.leader.office is None
    assert outbox_rounds(a.zk, layout) == [0], "a deposed leader deletes nothing"


def test_a_collector_fence_makes_the_leader_step_down_and_keep_the_round(
        fleet: MemFleet, layout: Layout) -> None:
    a = fleet.node("a")
    a.lead()
    a.measure(1.0)
    a.close()
    assert a.leader.on_delivery(0, Outcome.FENCED, "HTTP 409") is not None
    assert a.leader.office is None and outbox_rounds(a.zk, layout) == [0]


def test_a_new_leader_inherits_and_delivers_the_rounds_a_dead_one_left(
        fleet: MemFleet, layout: Layout, caplog) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.lead()
    b.register()
    for _ in range(3):
        a.measure(1.0)
        a.close()
    a.zk.expire()
    assert b.evaluate() and b.step() is None
    assert set(b.courier.pending) == {0, 1, 2}
    assert "inherited 3 undelivered rounds (0..2)" in caplog.text
    b.measure(2.0)
    assert b.close() is None
    assert outbox_rounds(b.zk, layout) == [0, 1, 2, 3], "the new office resumes the count"
    rounds = [json.loads(b.zk.get(f"{layout.outbox}/{name}")[0])["epoch"]
              for name in sorted(b.zk.children(layout.outbox))]
    assert rounds == [1, 1, 1, 2]
