"""Taking office, and checking that an office still stands.

Taking office is one transaction: it checks that our candidate znode still stands (we are
first in line), moves the epoch znode by the version we read (so two would-be leaders
cannot both succeed) to the next epoch number, and repairs whatever coordination znode it
found missing or holding garbage (coordination.py), all fenced together. A failed or
unknown outcome leaves nothing half done: the next attempt reads everything again.

A sitting leader re-reads the same znodes after any write whose outcome it does not know,
and stands only while the epoch znode is still the one its office was built on (the same
creation) at the same version.
"""

import time
from dataclasses import dataclass
from enum import StrEnum

from zk_sensor.fleet.coordination import (
    FleetState,
    Repairs,
    add_repairs,
    plan_repairs,
)
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import EpochRecord
from zk_sensor.zk.errors import first_failure
from zk_sensor.zk.interface import Zk, ZnodeStat


class Deposed(StrEnum):
    """Why a leader's office no longer stands, as a fenced write or a re-read found it:
    the leader steps down, and stands for office again only through the election. A str
    (its text is the log line), so callers can log it or hand it on as a reason."""

    EPOCH_MOVED = "the epoch moved: another leader took office"
    EPOCH_GONE = "the epoch znode is gone"
    INCARNATION_CHANGED = "the fleet's incarnation znode changed"


@dataclass(frozen=True)
class Office:
    """A leader's term: the epoch it took office with, the epoch znode's version that
    fences every write of it and the zxid that created that znode (a znode deleted and
    created again starts over at the same versions: only its creation tells them apart),
    the fleet's incarnation it acts for, and the offset of this node's clock from the
    server's (measured on taking office)."""

    epoch: int
    version: int
    created: int
    incarnation: str
    clock_offset: float
    taken_at: float

    def holds(self, version: int | None, created: int | None) -> bool:
        """Whether the epoch znode as read (None: missing) is still this office's."""
        return version == self.version and created == self.created


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
    transaction = zk.transaction()
    transaction.check(candidate, 0)
    record = EpochRecord(epoch, leader).encode()
    if state.epoch_version is None:
        # Created, then set: the set's answer is the stat the office is fenced on.
        transaction.create(layout.epoch, record)
        transaction.set_data(layout.epoch, record, version=0)
    else:
        transaction.set_data(layout.epoch, record, version=state.epoch_version)
    add_repairs(transaction, layout, state, repairs)
    sent_at, sent_monotonic = time.time(), time.monotonic()
    results = zk.commit(transaction)
    failure = first_failure(results)
    if failure is not None:
        raise failure
    received_at = time.time()
    stat = results[2 if state.epoch_version is None else 1]
    assert isinstance(stat, ZnodeStat), "a committed set_data answers with the znode's stat"
    offset = (sent_at + received_at) / 2 - stat.mtime / 1000.0
    incarnation = repairs.incarnation or state.incarnation or ""
    office = Office(epoch=epoch, version=stat.version, created=stat.czxid,
                    incarnation=incarnation,
                    clock_offset=offset, taken_at=sent_monotonic)
    return office, repairs


def standing_problem(office: Office, state: FleetState) -> Deposed | None:
    """Why a sitting leader must step down after re-reading, or None if it stands."""
    if state.epoch_version is None:
        return Deposed.EPOCH_GONE
    if not office.holds(state.epoch_version, state.epoch_created):
        return Deposed.EPOCH_MOVED
    if state.incarnation != office.incarnation:
        return Deposed.INCARNATION_CHANGED
    return None


def repair_in_office(zk: Zk, layout: Layout, office: Office, state: FleetState,
                     repairs: Repairs) -> None:
    """Write `repairs` (plan_repairs), fenced by our epoch; raises on failure."""
    if not repairs:
        return
    transaction = zk.transaction()
    transaction.check(layout.epoch, office.version)
    add_repairs(transaction, layout, state, repairs)
    results = zk.commit(transaction)
    failure = first_failure(results)
    if failure is not None:
        raise failure
