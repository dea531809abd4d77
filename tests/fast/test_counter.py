"""The counter (fleet/counter.py, node/device.py): every reading carries its node's whole
count, so the fleet's total is exact across unknown outcomes and lost sessions."""

import time

import pytest

from zk_sensor.fleet.counter import fleet_total, own_count
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.readings import collect_readings
from zk_sensor.node.clock import Clock
from zk_sensor.node.device import Device
from zk_sensor.testing.memfleet import MemFleet, reading
from zk_sensor.testing.memory import MemoryZk
from zk_sensor.zk.errors import ZK_ERRORS


def total(zk: MemoryZk, layout: Layout) -> int:
    return fleet_total(zk, layout, collect_readings(zk, layout))


def device(zk: MemoryZk, layout: Layout, node_id: str) -> Device:
    zk.ensure_path(layout.readings)
    zk.ensure_path(layout.counter)
    return Device(zk, layout, node_id, reader=None, clock=Clock(lambda: True))  # type: ignore[arg-type]


def test_the_total_is_the_sum_of_every_nodes_count_and_old_shards_count_too(
        zk: MemoryZk, layout: Layout) -> None:
    zk.ensure_path(layout.readings)
    zk.ensure_path(layout.counter)
    for node_id, count in (("a", 3), ("b", 5), ("c", 7)):
        zk.create(layout.reading(node_id), reading(1.0, 0, count, taken_at=1.0))
    zk.create(layout.counter_shard("a"), b"10")
    zk.create(layout.counter_shard("gone"), b"4")
    zk.create(layout.counter_shard("junk"), b"not a count")
    assert total(zk, layout) == 10 + 5 + 7 + 4


def test_a_node_resumes_its_count_from_its_reading_or_an_older_shard(
        zk: MemoryZk, layout: Layout) -> None:
    zk.ensure_path(layout.counter)
    assert own_count(zk, layout, "a", 6) == 6
    zk.create(layout.counter_shard("a"), b"9")
    assert own_count(zk, layout, "a", 6) == 9
    node = device(zk, layout, "b")
    zk.create(layout.reading("b"), reading(1.0, 3, 12, taken_at=1.0))
    node.resume_count()
    assert node.count == 12


@pytest.mark.parametrize("landed", [False, True], ids=["lost-request", "lost-reply"])
def test_a_measurement_is_counted_once_across_an_unknown_outcome(
        zk: MemoryZk, layout: Layout, landed: bool) -> None:
    node = device(zk, layout, "a")
    node.resume_count()
    node.record(0, 1.0, time.monotonic())
    zk.fail("set", layout.reading("a"), after=landed)
    with pytest.raises(ZK_ERRORS):
        node.record(1, 2.0, time.monotonic())
    assert total(zk, layout) == (2 if landed else 1)
    node.record(1, 2.0, time.monotonic())
    assert total(zk, layout) == 2, "written again as a whole count, not +1"
    node.record(2, 3.0, time.monotonic())
    assert total(zk, layout) == 3


def test_a_reading_outlives_its_session_with_its_count(fleet: MemFleet,
                                                       layout: Layout) -> None:
    a = fleet.node("a")
    a.register()
    node = device(a.zk, layout, "a")
    node.resume_count()
    for round_number in range(4):
        node.record(round_number, 1.0, time.monotonic())
    a.zk.expire()
    assert total(a.zk, layout) == 4
    reborn = device(fleet.node("a").zk, layout, "a")
    reborn.resume_count()
    reborn.record(4, 1.0, time.monotonic())
    assert total(a.zk, layout) == 5


def test_an_ephemeral_reading_of_an_earlier_release_is_replaced_by_a_persistent_one(
        fleet: MemFleet, layout: Layout, caplog) -> None:
    old = fleet.node("a")
    old.register()
    old.zk.create(layout.reading("a"), reading(1.0, 0, 5, taken_at=1.0), ephemeral=True)
    node = device(fleet.node("a").zk, layout, "a")
    node.resume_count()
    node.record(1, 1.0, time.monotonic())
    assert "replacing ephemeral reading znode" in caplog.text
    assert node.zk.exists(layout.reading("a")).ephemeralOwner == 0
    old.zk.expire()
    assert total(node.zk, layout) == 6, "the count survives the old session"
