"""Switchover (fleet/switchover.py, node/handover.py): the line moves between rounds, the
target takes office with a new epoch, no round is lost or closed twice; a request of
another epoch is inert, garbage is ignored."""

import time

import pytest

from zk_sensor.fleet.election import node_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import Outcome
from zk_sensor.fleet.switchover import (
    Request,
    encode_request,
    handed_over,
    plan_request,
    read_leadership,
    withdraw_request,
    write_request,
)
from zk_sensor.node.handover import Handover
from zk_sensor.testing.memfleet import MemFleet, MemNode, barrier_round, epoch_of, outbox_rounds
from zk_sensor.testing.memory import MemoryZk
from zk_sensor.zk.errors import ZK_ERRORS


def handover(node: MemNode) -> Handover:
    """The node's part, as the daemon keeps it (one per node)."""
    part = getattr(node, "handover", None)
    if part is None:
        part = Handover(node.zk, node.layout, node.node_id, node.election, node.leader,
                        http_timeout=1.0, on_change=lambda _event: None)
        node.handover = part  # type: ignore[attr-defined]
    return part


def hand_over(node: MemNode, now: float | None = None) -> bool:
    """One daemon step's part: read the request (step_aside), then hand over if leading."""
    now = time.monotonic() if now is None else now
    part = handover(node)
    part.step_aside(now)
    return part.hand_over(now, leading=node.leader.office is not None)


def three(fleet: MemFleet) -> tuple[MemNode, MemNode, MemNode]:
    a, b, c = (fleet.node(node_id) for node_id in "abc")
    a.lead()
    for node in (b, c):
        node.register()
        assert not node.evaluate()
    return a, b, c


def ask(admin: MemoryZk, layout: Layout, to: str | None) -> Request:
    request = plan_request(read_leadership(admin, layout), to, "operator@test")
    write_request(admin, layout, encode_request(request))
    return request


def test_a_switchover_hands_over_to_the_next_in_line_with_a_new_epoch(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a, b, _ = three(fleet)
    before = read_leadership(admin, layout)
    ask(admin, layout, None)
    assert hand_over(a)
    assert a.leader.office is None
    assert b.evaluate() and b.step() is None
    after = read_leadership(admin, layout)
    assert after.leader == "b" and handed_over(before, after, None)
    assert epoch_of(admin, layout) == 2
    assert not a.evaluate(), "a stands at the back of the line"


def test_a_switchover_to_a_named_node_moves_everyone_ahead_of_it_leader_last(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a, b, c = three(fleet)
    ask(admin, layout, "c")
    assert not hand_over(a), "b still stands ahead"
    assert a.leader.office is not None
    assert handover(b).step_aside(time.monotonic())
    assert hand_over(a)
    assert not b.evaluate()
    assert c.evaluate() and c.step() is None
    assert read_leadership(admin, layout).leader == "c"


def test_the_leader_hands_over_only_once_its_outbox_is_empty(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    a, b, _ = three(fleet)
    a.measure(1.0)
    assert a.close() is None
    ask(admin, layout, None)
    now = time.monotonic()
    assert not hand_over(a, now), "round 0 is being delivered"
    a.leader.on_delivery(0, Outcome.DELIVERED, "HTTP 200")
    assert a.step() is None
    assert hand_over(a, now)
    assert b.evaluate() and b.step() is None
    b.measure(1.0)
    assert b.close() is None
    assert outbox_rounds(admin, layout) == [1] and barrier_round(admin, layout) == 2


def test_a_request_of_another_epoch_is_inert(fleet: MemFleet, layout: Layout,
                                            admin: MemoryZk, caplog) -> None:
    a, _, _ = three(fleet)
    write_request(admin, layout, encode_request(Request(0, None, None, "old")))
    assert not hand_over(a)
    assert a.leader.office is not None
    assert "switchover request for epoch 0 ignored" in caplog.text


def test_a_garbage_request_is_logged_and_ignored(fleet: MemFleet, layout: Layout,
                                                admin: MemoryZk, caplog) -> None:
    a, b, _ = three(fleet)
    write_request(admin, layout, b'{"epoch": "one"}')
    assert not hand_over(a)
    assert not handover(b).step_aside(time.monotonic())
    assert "switchover request ignored" in caplog.text and a.leader.office is not None


def test_the_cli_refuses_a_request_nobody_can_carry_out(fleet: MemFleet, layout: Layout,
                                                        admin: MemoryZk) -> None:
    a = fleet.node("a")
    a.lead()
    now = read_leadership(admin, layout)
    with pytest.raises(ValueError, match="only candidate"):
        plan_request(now, None, "op")
    with pytest.raises(ValueError, match="is the leader already"):
        plan_request(now, "a", "op")
    with pytest.raises(ValueError, match="not a live candidate"):
        plan_request(now, "zz", "op")


def test_a_request_written_with_an_unknown_outcome_still_counts_and_is_withdrawn(
        fleet: MemFleet, layout: Layout, admin: MemoryZk) -> None:
    three(fleet)
    request = plan_request(read_leadership(admin, layout), None, "op")
    data = encode_request(request)
    admin.ensure_path(layout.switchover)
    admin.lose_reply("set", layout.switchover)
    write_request(admin, layout, data)
    assert admin.get(layout.switchover)[0] == data, "it landed: no error was raised"
    withdraw_request(admin, layout, data)
    assert admin.get(layout.switchover)[0] == b""


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-reply"])
def test_a_handover_whose_standing_again_is_unknown_leaves_one_leader_and_no_orphan(
        fleet: MemFleet, layout: Layout, admin: MemoryZk, landed: bool) -> None:
    a, b, c = three(fleet)
    ask(admin, layout, None)
    a.zk.fail("create", f"{layout.election}/n_a_*", after=landed)
    with pytest.raises(ZK_ERRORS):
        hand_over(a)
    assert a.leader.office is None
    for node in (a, b, c):
        hand_over(node)
        node.evaluate()
    names = admin.children(layout.election)
    assert sorted(node_of(name) for name in names) == ["a", "b", "c"], "no orphan"
    assert len(fleet.leaders()) == 1
