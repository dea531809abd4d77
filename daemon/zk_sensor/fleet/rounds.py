"""Closing a round: collect the readings, aggregate them, release the next round.

One transaction does it all, so a round is either closed everywhere or nowhere: it checks
the epoch znode's version (a deposed leader's write fails), moves the barrier by its
version (nobody else moved it meanwhile), queues the aggregate in the outbox and records
the round it opens. Its outcome has three cases, and the leader handles each: committed,
refused (someone moved the epoch or the barrier: re-read before acting again), or
unknown (a timeout or a lost connection: it may have landed; re-read, never guess).
"""

import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from zk_sensor.fleet.aggregate import Aggregate, aggregate
from zk_sensor.fleet.barrier import BarrierState, add_release, next_round
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.office import Deposed
from zk_sensor.fleet.outbox import Outbox, OutboxStats
from zk_sensor.fleet.readings import Collection, Reading, collect_readings
from zk_sensor.zk.errors import NodeExistsError, NoNodeError, first_failure
from zk_sensor.zk.interface import Transaction, Zk

log = logging.getLogger("zk_sensor")

# What node/leader.py compares a refusal with (`why == EPOCH_MOVED`): the office's member.
EPOCH_MOVED = Deposed.EPOCH_MOVED


class NotReleased(StrEnum):
    """A release refused without deposing the leader: something else moved the barrier or
    the outbox, so the leader re-reads the coordination znodes and closes the round again.
    A str (its text is the log line)."""

    BARRIER_MOVED = "the barrier moved or holds garbage"
    ROUND_QUEUED = "NodeExistsError in the outbox: the round is queued already"
    ENTRY_GONE = "NoNodeError in the outbox: the outbox or its oldest round is gone"
    OUTBOX_REFUSED = "the outbox refused the release"


@dataclass
class Closing:
    """A round being closed: what the release transaction will write, and why."""
    current: BarrierState
    released: BarrierState
    result: Aggregate | None
    readings: list[Reading]
    collection: Collection
    dropped: int | None
    stats: OutboxStats
    transaction: Transaction


def prepare_closing(zk: Zk, layout: Layout, current: BarrierState, barrier_version: int,
                    epoch: int, epoch_version: int, incarnation: str, leader: str,
                    outbox: Outbox, clock_synced: bool) -> Closing:
    collection = collect_readings(zk, layout)
    readings = collection.for_round(current.round)
    result = aggregate([reading.value for reading in readings], round_number=current.round,
                       epoch=epoch, leader=leader, now=time.time(), incarnation=incarnation,
                       clock_synced=clock_synced)
    released = next_round(current, epoch=epoch, leader=leader, now=time.time(), last=result,
                          clock_synced=clock_synced)
    transaction = zk.transaction()
    transaction.check(layout.epoch, epoch_version)
    add_release(transaction, layout.barrier, released, barrier_version)
    dropped, stats = outbox.add_release(transaction, result, released.round)
    return Closing(current, released, result, readings, collection, dropped, stats,
                   transaction)


def refusal(results: list[Any]) -> Deposed | NotReleased | None:
    """Why a release transaction failed, or None if it committed: Deposed (the epoch
    check failed: step down) or NotReleased (re-read, then try again)."""
    failure = first_failure(results)
    if failure is None:
        return None
    if failure is results[0]:
        return Deposed.EPOCH_MOVED
    if failure is results[1]:
        return NotReleased.BARRIER_MOVED
    if isinstance(failure, NodeExistsError):
        return NotReleased.ROUND_QUEUED
    if isinstance(failure, NoNodeError):
        return NotReleased.ENTRY_GONE
    return NotReleased.OUTBOX_REFUSED


def slowest_device(readings: list[Reading], released_stored_at: float) -> float:
    """Seconds from a round's release to its last reading, both as ZooKeeper committed
    them: one clock, the ensemble's, whatever the nodes' own clocks say; 0 if unknown."""
    times = [reading.stored_at for reading in readings if reading.stored_at > 0]
    if not times or released_stored_at <= 0:
        return 0.0
    return max(0.0, max(times) - released_stored_at)


def log_round(closing: Closing, work: float, spread: float, live: set[str] | None) -> None:
    """One line per round; `slowest` is the last device's delay after the release, and
    `leader` the collection and commit this round cost the leader. A reading from an
    older round is late if its device is a live candidate; otherwise its node is gone
    (its reading stays, with its count), which still costs the leader a read."""
    collection, result = closing.collection, closing.result
    stale = [r.node for r in collection.readings if r.round != closing.current.round]
    late = len(stale) if live is None else sum(1 for node in stale if node in live)
    notes = []
    if late:
        notes.append(f"{late} late")
    if len(stale) > late:
        notes.append(f"{len(stale) - late} from nodes gone")
    if collection.garbage:
        notes.append(f"{len(collection.garbage)} garbage skipped "
                     f"({', '.join(collection.garbage)})")
    if collection.vanished:
        notes.append(f"{len(collection.vanished)} vanished mid-read")
    suffix = f" [{'; '.join(notes)}]" if notes else ""
    timing = f"slowest {spread:.2f} s, leader {work * 1000:.0f} ms"
    round_number = closing.current.round
    if result is None:
        log.info("round %d: no readings; %s%s", round_number, timing, suffix)
        return
    log.info("round %d: mean %.2f over %d devices (min %.2f, max %.2f); %s%s",
             round_number, result.mean, result.count, result.min, result.max, timing, suffix)
