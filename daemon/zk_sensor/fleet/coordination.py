"""The coordination znodes: created with the namespace, read by a leader before it acts,
repaired by it when they hold garbage or are gone.

- `incarnation`: the fleet's identity, a random id created in the same transaction as
  the epoch and the barrier. Every delivery carries it, and the collector keys and fences
  rounds by it, so a namespace rebuilt from nothing is a new fleet, not a replay.
- `epoch`: holds the epoch number (JSON); its znode version fences every leader write. The
  number lives in the data, not in the version, so a deleted epoch znode comes back with
  the number it had (from the barrier's last release), never from zero.
- `barrier`: the open round (barrier.py). Round numbers must never repeat within one
  incarnation (the collector would take the new round for a duplicate), so a repaired
  barrier resumes from the highest round anything remembers: a node's memory, the
  outbox's record of the last release, the pending rounds, or the barrier's own version
  (each release bumps it once). With no evidence left, the fleet becomes a new
  incarnation instead of guessing.
- `outbox`: pending rounds (outbox.py); its data records the last release.
"""

from dataclasses import dataclass, field

from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import Loaded, OutboxStats, load_outbox
from zk_sensor.fleet.payloads import BarrierState, EpochRecord, Incarnation, or_none
from zk_sensor.fleet.payloads import epoch_holder as epoch_holder  # imported from here
from zk_sensor.zk.errors import NoNodeError
from zk_sensor.zk.interface import Transaction, Zk


def new_incarnation() -> str:
    return Incarnation.new().id


def decode_incarnation(data: bytes | None) -> str | None:
    """The fleet's id, or None for garbage (`Incarnation.decode` says why)."""
    incarnation = or_none(Incarnation.decode(data))
    return None if incarnation is None else incarnation.id


def encode_epoch(epoch: int, leader: str) -> bytes:
    return EpochRecord(epoch, leader).encode()


def decode_epoch(data: bytes | None, version: int) -> int | None:
    """The epoch number; a bare leader id (written by earlier releases, whose epoch was the
    znode's version) stands for the version; None for garbage (`EpochRecord.decode` says
    why)."""
    record = or_none(EpochRecord.decode(data, version))
    return None if record is None else record.epoch


@dataclass
class FleetState:
    """The coordination znodes as read: a leader's evidence before it acts. A version of
    None means the znode is missing; a value of None with a version means it holds
    garbage, which the leader repairs (plan_repairs)."""
    incarnation: str | None = None
    incarnation_version: int | None = None
    epoch: int | None = None
    epoch_version: int | None = None
    barrier: BarrierState | None = None
    barrier_version: int | None = None
    pending: Loaded | None = None
    # The zxid that created the epoch znode: a re-created one starts over at version 0.
    epoch_created: int | None = None


def read_fleet_state(zk: Zk, layout: Layout) -> FleetState:
    """The three coordination znodes in one batch, and the outbox (None if it is gone)."""
    state = FleetState()
    found = zk.get_many([layout.incarnation, layout.epoch, layout.barrier])
    if (incarnation := found[layout.incarnation]) is not None:
        state.incarnation = decode_incarnation(incarnation[0])
        state.incarnation_version = incarnation[1].version
    if (epoch := found[layout.epoch]) is not None:
        state.epoch = decode_epoch(epoch[0], epoch[1].version)
        state.epoch_version, state.epoch_created = epoch[1].version, epoch[1].czxid
    if (barrier := found[layout.barrier]) is not None:
        state.barrier = or_none(BarrierState.decode(barrier[0]))
        state.barrier_version = barrier[1].version
    try:
        state.pending = load_outbox(zk, layout)
    except NoNodeError:
        state.pending = None
    return state


@dataclass
class Repairs:
    """What a leader writes, fenced, before it acts; `notes` are the log lines."""
    incarnation: str | None = None
    barrier: BarrierState | None = None
    outbox: OutboxStats | None = None
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.incarnation or self.barrier or self.outbox)


def highest_round(state: FleetState, remembered: int | None) -> int | None:
    """The open round as the evidence shows it, or None with no evidence at all.

    The outbox's record of the last release is exact; a garbage barrier's version is only
    an upper bound (garbage writes bump it too), used when the outbox's record is gone or
    garbage as well: a round number skipped is harmless, one used twice is not."""
    evidence = [] if remembered is None else [remembered]
    if state.barrier is not None:
        evidence.append(state.barrier.round)
    if state.pending is not None:
        evidence.append(state.pending.stats.released)
        evidence.extend(aggregate.round + 1 for aggregate in state.pending.rounds)
    record_known = state.pending is not None and state.pending.stats_read
    if state.barrier is None and state.barrier_version is not None and not record_known:
        evidence.append(state.barrier_version)
    return max(evidence) if evidence else None


def plan_repairs(state: FleetState, remembered: int | None, epoch: int) -> Repairs:
    """What to write, fenced by `epoch`, so every coordination znode holds a value again:
    a new incarnation, a barrier at the highest round anything remembers, an empty outbox.
    Pure: the tests decide it without a server."""
    repairs = Repairs()
    if state.epoch is None and state.epoch_version is not None:
        # Taking office rewrites the epoch znode anyway; a sitting leader never sees this
        # (its epoch znode still holds what it wrote, or it has stepped down).
        repairs.notes.append(f"the epoch znode holds garbage: replacing it with epoch {epoch}")
    if state.incarnation is None:
        repairs.incarnation = new_incarnation()
        repairs.notes.append("the fleet's incarnation znode is "
                             + ("missing" if state.incarnation_version is None else "garbage")
                             + f": this fleet is now incarnation {repairs.incarnation}")
    if state.barrier is None:
        round_number = highest_round(state, remembered)
        what = "missing" if state.barrier_version is None else "garbage"
        if round_number is None:
            if repairs.incarnation is None:
                repairs.incarnation = new_incarnation()
                repairs.notes.append(f"the barrier is {what} and nothing remembers the round: "
                                     f"starting incarnation {repairs.incarnation} at round 0")
            round_number = 0
        else:
            repairs.notes.append(f"the barrier is {what}: restoring it at round {round_number}")
        repairs.barrier = BarrierState(round=round_number, epoch=epoch)
    if state.pending is None:
        barrier = repairs.barrier or state.barrier
        repairs.outbox = OutboxStats(released=barrier.round if barrier else 0)
        repairs.notes.append("the outbox znode is missing: recreating it (its pending rounds "
                             "are lost)")
    return repairs


def add_repairs(transaction: Transaction, layout: Layout, state: FleetState,
                repairs: Repairs) -> None:
    """Each repair by the version read, so a concurrent writer makes the whole fail."""
    if repairs.incarnation is not None:
        put(transaction, layout.incarnation, repairs.incarnation.encode(),
            state.incarnation_version)
    if repairs.barrier is not None:
        put(transaction, layout.barrier, repairs.barrier.encode(), state.barrier_version)
    if repairs.outbox is not None:
        transaction.create(layout.outbox, repairs.outbox.encode())


def put(transaction: Transaction, path: str, data: bytes, version: int | None) -> None:
    """Create a missing znode, or overwrite the one read by its version."""
    if version is None:
        transaction.create(path, data)
    else:
        transaction.set_data(path, data, version=version)


def prepare_namespace(zk: Zk, layout: Layout) -> None:
    """Create the folders, and a new fleet's incarnation, epoch and barrier in one
    transaction: after an unknown outcome the incarnation's presence says whether all of
    them landed. An existing fleet is left as it is; its leader repairs what is broken."""
    for path in layout.persistent_dirs():
        zk.ensure_path(path)
    if zk.exists(layout.incarnation) is not None:
        return
    transaction = zk.transaction()
    transaction.create(layout.incarnation, new_incarnation().encode())
    if zk.exists(layout.epoch) is None:
        transaction.create(layout.epoch, encode_epoch(0, ""))
    if zk.exists(layout.barrier) is None:
        transaction.create(layout.barrier, BarrierState(round=0).encode())
    zk.commit(transaction)
