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

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import TransactionRequest
from kazoo.exceptions import NoNodeError

from zk_sensor.codec import Undecodable, json_object, whole_number
from zk_sensor.fleet.barrier import BarrierState, decode_barrier, encode_barrier
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import Loaded, OutboxStats, encode_stats, load_outbox
from zk_sensor.zk.client import Zk

INCARNATION = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A leader's id in the epoch znode (bare, as earlier releases wrote it, or in its JSON) is
# at most 64 characters, as node ids are; anything longer is garbage.
MAX_BARE_ID = 64


def new_incarnation() -> str:
    return uuid.uuid4().hex


def decode_incarnation(data: bytes | None) -> str | None:
    text = (data or b"").decode(errors="replace").strip()
    return text if INCARNATION.fullmatch(text) else None


def encode_epoch(epoch: int, leader: str) -> bytes:
    return json.dumps({"epoch": epoch, "leader": leader}, separators=(",", ":")).encode()


def decode_epoch(data: bytes | None, version: int) -> int | None:
    """The epoch number; a bare leader id (written by earlier releases, whose epoch was the
    znode's version) stands for the version; None for garbage."""
    if (payload := epoch_payload(data)) is None:
        return version if bare_id(data) is not None else None
    try:
        return whole_number(payload.get("epoch"), "epoch")
    except Undecodable:
        return None


def epoch_holder(data: bytes | None) -> str | None:
    """The node that took office with this epoch (a bare id in earlier releases)."""
    if (payload := epoch_payload(data)) is None:
        return bare_id(data)
    leader = payload.get("leader")
    return leader if isinstance(leader, str) and printable_id(leader) else None


def epoch_payload(data: bytes | None) -> dict[str, Any] | None:
    """The epoch znode's JSON object; None for a bare id, or for garbage (which is no
    bare id either, so both callers then say None)."""
    if not (data or b"").lstrip().startswith(b"{"):
        return None
    try:
        return json_object(data)
    except Undecodable:
        return None


def bare_id(data: bytes | None) -> str | None:
    """An earlier release's epoch znode: the leader's id alone, printable and short."""
    if not data or len(data) > MAX_BARE_ID or data.lstrip().startswith(b"{"):
        return None
    text = data.decode(errors="replace").strip()
    return text if printable_id(text) else None


def printable_id(text: str) -> bool:
    """A lone surrogate (JSON's `\\ud800`) is not printable, so it never reaches a log."""
    return 0 < len(text) <= MAX_BARE_ID and text.isprintable()


@dataclass
class FleetState:
    """The coordination znodes as read; a version of None means the znode is missing."""
    incarnation: str | None = None
    incarnation_version: int | None = None
    epoch: int | None = None
    epoch_version: int | None = None
    barrier: BarrierState | None = None
    barrier_version: int | None = None
    pending: Loaded | None = None


def read_fleet_state(zk: Zk, layout: Layout) -> FleetState:
    state = FleetState()
    found = zk.get_many([layout.incarnation, layout.epoch, layout.barrier])
    if (incarnation := found[layout.incarnation]) is not None:
        state.incarnation = decode_incarnation(incarnation[0])
        state.incarnation_version = incarnation[1].version
    if (epoch := found[layout.epoch]) is not None:
        state.epoch = decode_epoch(epoch[0], epoch[1].version)
        state.epoch_version = epoch[1].version
    if (barrier := found[layout.barrier]) is not None:
        state.barrier = decode_barrier(barrier[0])
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
    an upper bound (garbage writes bump it too), used when the outbox is gone as well."""
    evidence = [] if remembered is None else [remembered]
    if state.barrier is not None:
        evidence.append(state.barrier.round)
    if state.pending is not None:
        evidence.append(state.pending.stats.released)
        evidence.extend(aggregate.round + 1 for aggregate in state.pending.rounds)
    elif state.barrier is None and state.barrier_version is not None:
        evidence.append(state.barrier_version)
    return max(evidence) if evidence else None


def plan_repairs(state: FleetState, remembered: int | None, epoch: int) -> Repairs:
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


def add_repairs(transaction: TransactionRequest, layout: Layout, state: FleetState,
                repairs: Repairs) -> None:
    """Each repair by the version read, so a concurrent writer makes the whole fail."""
    if repairs.incarnation is not None:
        put(transaction, layout.incarnation, repairs.incarnation.encode(),
            state.incarnation_version)
    if repairs.barrier is not None:
        put(transaction, layout.barrier, encode_barrier(repairs.barrier), state.barrier_version)
    if repairs.outbox is not None:
        transaction.create(layout.outbox, encode_stats(repairs.outbox))


def put(transaction: TransactionRequest, path: str, data: bytes, version: int | None) -> None:
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
    transaction = zk.client.transaction()
    transaction.create(layout.incarnation, new_incarnation().encode())
    if zk.exists(layout.epoch) is None:
        transaction.create(layout.epoch, encode_epoch(0, ""))
    if zk.exists(layout.barrier) is None:
        transaction.create(layout.barrier, encode_barrier(BarrierState(round=0)))
    zk.commit(transaction)
