"""Taking office, and checking that an office still stands.

Taking office is one transaction: it checks that our candidate znode still stands (we are
first in line), moves the epoch znode by the version we read (so two would-be leaders
cannot both succeed) to the next epoch number, and repairs whatever coordination znode it
found missing or holding garbage (coordination.py), all fenced together. A failed or
unknown outcome leaves nothing half done: the next attempt reads everything again.

A sitting leader re-reads the same znodes after any write whose outcome it does not know,
and stands only while the epoch znode still has the version its office was built on.
"""

import time
from dataclasses import dataclass

from kazoo.protocol.states import ZnodeStat

from zk_sensor.fleet.coordination import (
    FleetState,
    Repairs,
    add_repairs,
    encode_epoch,
    plan_repairs,
    put,
)
from zk_sensor.fleet.layout import Layout
from zk_sensor.zk.client import Zk, first_failure


@dataclass(frozen=True)
class Office:
    epoch: int
    version: int
    incarnation: str
    clock_offset: float
    taken_at: float


def next_epoch(state: FleetState) -> int:
    """Higher than any epoch the fleet has used, whatever happened to the epoch znode."""
    known = [0]
    if state.epoch is not None:
        known.append(state.epoch)
    elif state.epoch_version is not None:
        known.append(state.epoch_version)
    if state.barrier is not None:
        known.append(state.barrier.epoch)
    if state.pending is not None:
        known.extend(aggregate.epoch for aggregate in state.pending.rounds)
    return max(known) + 1


def take_office(zk: Zk, layout: Layout, candidate: str, leader: str, state: FleetState,
                remembered: int | None) -> tuple[Office, Repairs]:
    """Raises the transaction's failure (or a ZooKeeper error: outcome unknown)."""
    epoch = next_epoch(state)
    repairs = plan_repairs(state, remembered, epoch)
    transaction = zk.client.transaction()
    transaction.check(candidate, 0)
    put(transaction, layout.epoch, encode_epoch(epoch, leader), state.epoch_version)
    add_repairs(transaction, layout, state, repairs)
    sent_at, sent_monotonic = time.time(), time.monotonic()
    results = zk.commit(transaction)
    failure = first_failure(results)
    if failure is not None:
        raise failure
    received_at = time.time()
    stat = results[1] if isinstance(results[1], ZnodeStat) else None
    offset = (sent_at + received_at) / 2 - stat.mtime / 1000.0 if stat else 0.0
    incarnation = repairs.incarnation or state.incarnation or ""
    office = Office(epoch=epoch, version=stat.version if stat else 0, incarnation=incarnation,
                    clock_offset=offset, taken_at=sent_monotonic)
    return office, repairs


def standing_problem(office: Office, state: FleetState) -> str | None:
    """Why a sitting leader must step down after re-reading, or None."""
    if state.epoch_version is None:
        return "the epoch znode is gone"
    if state.epoch_version != office.version:
        return f"the epoch znode moved (version {state.epoch_version}, ours {office.version})"
    if state.incarnation != office.incarnation:
        return "the fleet's incarnation znode changed"
    return None


def repair_in_office(zk: Zk, layout: Layout, office: Office, state: FleetState,
                     remembered: int | None) -> Repairs:
    """Repair the barrier or the outbox, fenced by our epoch; raises on failure."""
    repairs = plan_repairs(state, remembered, office.epoch)
    if not repairs:
        return repairs
    transaction = zk.client.transaction()
    transaction.check(layout.epoch, office.version)
    add_repairs(transaction, layout, state, repairs)
    results = zk.commit(transaction)
    failure = first_failure(results)
    if failure is not None:
        raise failure
    return repairs
