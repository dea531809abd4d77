"""Unknown outcomes anywhere, many times: a leader driven step by step while calls lose
their requests or their replies at random (seeded) must still release every round once,
in order, and hand each to the collector once."""

import contextlib
import random

import pytest

from zk_sensor.fleet.coordination import prepare_namespace
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import Outcome
from zk_sensor.testing.memfleet import MemFleet, barrier_round, outbox_rounds
from zk_sensor.zk.errors import ZK_ERRORS

OPERATIONS = [None, "commit", "commit", "get_many", "get", "children", "delete", "exists",
              "synced_exists"]


@pytest.mark.parametrize("seed", range(6))
def test_random_lost_requests_and_replies_never_lose_or_repeat_a_round(
        fleet: MemFleet, layout: Layout, seed: int) -> None:
    rng = random.Random(seed)
    a, device = fleet.node("a", outbox_limit=10_000), fleet.node("b")
    a.register()
    prepare_namespace(device.zk, layout)
    delivered: list[int] = []
    for _ in range(200):
        if rng.random() < 0.35:
            a.zk.fail(rng.choice(OPERATIONS), after=rng.random() < 0.5)
        device.measure(1.0)
        try:
            if a.leader.office is None:
                a.evaluate()
            if a.leader.clock is not None:
                a.due()
            if rng.random() < 0.2:
                a.leader.lease.since -= 100.0
            a.step()
        except ZK_ERRORS:
            pass
        for number in sorted(a.courier.pending)[:rng.randint(0, 2)]:
            assert number not in delivered, f"round {number} handed to the collector twice"
            delivered.append(number)
            a.leader.on_delivery(number, Outcome.DELIVERED, "HTTP 200")
    a.zk.faults.clear()
    for _ in range(5):
        if a.leader.office is None:
            a.evaluate()
        a.leader.lease.since -= 100.0
        a.step()
        for number in sorted(a.courier.pending):
            assert number not in delivered, f"round {number} handed to the collector twice"
            delivered.append(number)
            a.leader.on_delivery(number, Outcome.DELIVERED, "HTTP 200")
    released = barrier_round(a.zk, layout)
    assert released > 20, "the fleet made progress"
    assert outbox_rounds(a.zk, layout) == [], "every answered round was cleared"
    assert sorted(delivered) == list(range(released)), "each round released once, none lost"


def settle_node(node, rng: random.Random) -> None:
    """One daemon step of a node, as far as the leader's part goes."""
    if node.election.candidate is None or node.zk.exists(
            f"{node.layout.election}/{node.election.candidate}") is None:
        node.election.forget()
        node.register()
    if node.leader.office is None:
        node.evaluate()
    if node.leader.clock is not None:
        node.due()
    if rng.random() < 0.2:
        node.leader.lease.since -= 100.0
    if node.step():
        node.evaluate()


@pytest.mark.parametrize("seed", range(5))
def test_leaders_changing_under_random_faults_never_reuse_or_lose_a_round(
        fleet: MemFleet, layout: Layout, seed: int) -> None:
    """Two would-be leaders, sessions expiring, calls failing: a round number stands for
    one aggregate only, and every released round reaches the collector (a re-send after a
    change of leader is allowed: the collector de-duplicates by round)."""
    rng = random.Random(seed)
    nodes = [fleet.node("a", outbox_limit=10_000), fleet.node("b", outbox_limit=10_000)]
    device = fleet.node("d")  # only publishes readings: stands in no election
    prepare_namespace(device.zk, layout)
    for node in nodes:
        node.register()
    delivered: dict[int, set[tuple[float, int, int]]] = {}

    def deliver(node, count: int) -> None:
        for number in sorted(node.courier.pending)[:count]:
            aggregate = node.courier.pending[number]
            delivered.setdefault(number, set()).add(
                (aggregate.mean, aggregate.count, aggregate.epoch))
            node.leader.on_delivery(number, Outcome.DELIVERED, "HTTP 200")

    for step in range(300):
        node = nodes[step % 2]
        if rng.random() < 0.25:
            node.zk.fail(rng.choice(OPERATIONS), after=rng.random() < 0.5)
        if rng.random() < 0.03:
            leader = next((n for n in nodes if n.leader.office is not None), None)
            if leader is not None:
                leader.zk.expire()
        device.measure(float(step))
        with contextlib.suppress(*ZK_ERRORS):
            settle_node(node, rng)
        if node.leader.office is not None:
            deliver(node, rng.randint(0, 2))
    for node in nodes:
        node.zk.faults.clear()
    for _ in range(4):
        for node in nodes:
            device.measure(0.5)
            settle_node(node, rng)
            if node.leader.office is not None:
                deliver(node, 10_000)
    released = barrier_round(device.zk, layout)
    assert released > 20, "the fleet made progress"
    assert sorted(delivered) == list(range(released)), "none lost"
    reused = {number: seen for number, seen in delivered.items()
              if len({(mean, count) for mean, count, _epoch in seen}) > 1}
    assert not reused, f"round numbers closed twice with different readings: {reused}"
    assert len(fleet.leaders()) == 1
