"""Decisions a leader takes without a server: which epoch comes next, what a broken
coordination znode is repaired to, how the outbox is cleared in batches."""

import pytest

from zk_sensor.fleet.aggregate import Aggregate
from zk_sensor.fleet.barrier import BarrierState
from zk_sensor.fleet.coordination import (
    FleetState,
    decode_epoch,
    decode_incarnation,
    encode_epoch,
    epoch_holder,
    plan_repairs,
)
from zk_sensor.fleet.election import live_nodes, node_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.lease import Lease, timing_problem
from zk_sensor.fleet.office import next_epoch
from zk_sensor.fleet.outbox import CLEANUP_BATCH, Loaded, Outbox, OutboxStats, Outcome, decode_stats

# Pure logic, no server: part of the fast tier (make check).
pytestmark = pytest.mark.fast

INCARNATION = "0f" * 16


def pending(*rounds: int, epoch: int = 1) -> Loaded:
    return Loaded([Aggregate(r, epoch, "a", 1.0, 1, 1.0, 1.0, 0.0) for r in rounds], [],
                  OutboxStats(released=max(rounds, default=0) + 1))


def healthy(round_number: int = 7, epoch: int = 3) -> FleetState:
    return FleetState(INCARNATION, 0, epoch, epoch, BarrierState(round_number, epoch), 9,
                      pending(round_number - 1, epoch=epoch))


def test_epochs_are_numbers_in_the_data_and_old_bare_ids_stand_for_the_version() -> None:
    assert decode_epoch(encode_epoch(12, "a"), 0) == 12
    assert decode_epoch(b"node-a", 5) == 5
    assert decode_epoch(b"\x00\xff{", 5) is None and decode_epoch(b'{"epoch": -1}', 5) is None
    assert epoch_holder(encode_epoch(3, "b")) == "b" and epoch_holder(b"c") == "c"


def test_the_next_epoch_is_above_anything_the_fleet_used() -> None:
    state = healthy(epoch=3)
    assert next_epoch(state) == 4
    gone = FleetState(INCARNATION, 0, None, None, BarrierState(7, 9), 9, pending(6, epoch=11))
    assert next_epoch(gone) == 12, "a deleted epoch znode never restarts the numbers"


def test_a_healthy_fleet_needs_no_repair() -> None:
    assert not plan_repairs(healthy(), remembered=7, epoch=4)


def test_a_garbage_barrier_resumes_from_the_outbox_record_not_its_version() -> None:
    state = healthy(round_number=7)
    state.barrier = None
    state.barrier_version = 42
    repairs = plan_repairs(state, remembered=None, epoch=4)
    assert repairs.barrier is not None and repairs.barrier.round == 7
    assert repairs.incarnation is None


def test_a_barrier_with_no_evidence_left_starts_a_new_incarnation() -> None:
    state = FleetState(INCARNATION, 0, 3, 3, None, None, None)
    repairs = plan_repairs(state, remembered=None, epoch=4)
    assert repairs.incarnation not in (None, INCARNATION)
    assert repairs.barrier == BarrierState(round=0, epoch=4)
    assert repairs.outbox == OutboxStats(released=0)


def test_a_lost_outbox_is_recreated_at_the_barrier_round() -> None:
    state = healthy(round_number=7)
    state.pending = None
    repairs = plan_repairs(state, remembered=7, epoch=4)
    assert repairs.outbox == OutboxStats(released=7) and repairs.barrier is None


def test_a_garbage_incarnation_is_replaced() -> None:
    assert decode_incarnation(b"not an id!") is None
    state = healthy()
    state.incarnation = None
    repairs = plan_repairs(state, remembered=7, epoch=4)
    assert repairs.incarnation and decode_incarnation(repairs.incarnation.encode())


class Recorder:
    """Stands in for a kazoo transaction: records the operations."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str]] = []

    def delete(self, path: str, version: int = -1) -> None:
        self.ops.append(("delete", path))

    def set_data(self, path: str, data: bytes, version: int = -1) -> None:
        self.ops.append(("set", path))

    def create(self, path: str, data: bytes = b"") -> None:
        self.ops.append(("create", path))


def test_a_backlog_is_cleared_in_bounded_batches_and_rejections_are_counted() -> None:
    outbox = Outbox(Layout("/f"), limit=1000)
    outbox.load(pending(*range(250)))
    for number in range(250):
        outbox.answer(number, Outcome.REJECTED if number == 3 else Outcome.DELIVERED)
    commits = 0
    while outbox.forget_answers_for_gone_rounds():
        transaction = Recorder()
        batch, stats = outbox.add_cleanup(transaction)  # type: ignore[arg-type]
        assert len([op for op in transaction.ops if op[0] == "delete"]) <= CLEANUP_BATCH
        outbox.cleaned(batch, stats)
        commits += 1
    assert commits == 3 and outbox.pending == [] and outbox.stats.rejected == 1


def test_answers_for_rounds_already_gone_are_forgotten_on_reload() -> None:
    outbox = Outbox(Layout("/f"), limit=10)
    outbox.answer(5, Outcome.DELIVERED)
    outbox.answer(6, Outcome.DELIVERED)
    outbox.load(pending(6, 7))
    assert outbox.answered == {6: "delivered"}


def test_a_round_dropped_or_answered_twice_is_deleted_once_or_not_at_all() -> None:
    """Deleting a round that is gone would fail the whole cleanup transaction, every
    step: the outbox would never drain again and every round would be sent twice."""
    outbox = Outbox(Layout("/f"), limit=2)
    outbox.load(pending(11, 12))
    transaction = Recorder()
    dropped, stats = outbox.add_release(transaction, pending(13).rounds[0], 14)  # type: ignore[arg-type]
    outbox.released(pending(13).rounds[0], dropped, stats)
    assert dropped == 11
    outbox.answer(11, Outcome.DELIVERED)
    outbox.answer(12, Outcome.DELIVERED)
    outbox.answer(12, Outcome.DELIVERED)
    assert outbox.forget_answers_for_gone_rounds()
    transaction = Recorder()
    batch, stats = outbox.add_cleanup(transaction)  # type: ignore[arg-type]
    assert [op for op in transaction.ops if op[0] == "delete"] == [
        ("delete", Layout("/f").outbox_round(12))]
    outbox.cleaned(batch, stats)
    assert outbox.pending == [13] and not outbox.forget_answers_for_gone_rounds()


def test_stats_survive_garbage() -> None:
    assert decode_stats(b'{"dropped": 2, "released": 9}') == OutboxStats(2, 0, 9)
    assert decode_stats(b"[1]") == OutboxStats() and decode_stats(b"\xff") == OutboxStats()


def test_the_lease_is_half_the_negotiated_session() -> None:
    lease = Lease()
    lease.set_session_timeout(10.0)
    lease.renew(100.0)
    assert lease.fresh(104.9) and not lease.fresh(105.0)
    assert timing_problem(10.0, zk_deadline=2.0, http_timeout=2.0) is None
    assert "zk_deadline" in (timing_problem(4.0, zk_deadline=2.0, http_timeout=1.0) or "")
    assert "http_timeout" in (timing_problem(4.0, zk_deadline=1.0, http_timeout=2.0) or "")


def test_live_nodes_come_from_candidate_names() -> None:
    assert node_of("n_sensor_7_0000000012") == "sensor_7" and node_of("junk") is None
    assert node_of("n__0000000001") is None and node_of("n_a_x") is None
    assert live_nodes(["n_b_0000000003", "n_a_0000000001", "n_b_0000000009", "x"]) == ["a", "b"]
