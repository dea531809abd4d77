"""The coordination znodes' payloads: the barrier (the open round), the epoch (the
fencing token's number and who took office with it) and the incarnation (the fleet's
identity). What they mean and how they are repaired: barrier.py and coordination.py.
"""

import json
import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from zk_sensor.codec import Undecodable, finite_number, json_object, text_field, whole_number
from zk_sensor.fleet.payloads.garbage import Garbage
from zk_sensor.fleet.payloads.outbox import Aggregate

INCARNATION = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A leader's id in the epoch znode (bare, as earlier releases wrote it, or in its JSON) is
# at most 64 characters, as node ids are; anything longer is garbage.
MAX_BARE_ID = 64


@dataclass(frozen=True)
class BarrierState:
    """The barrier's payload: the round now open, and who opened it when (with the epoch
    it was opened under), and the previous round's aggregate (`last`, as
    `Aggregate.as_dict` wrote it) so every node and the CLI can show it."""

    round: int
    epoch: int = 0
    leader: str = ""
    released_at: float = 0.0
    last: dict[str, Any] | None = None
    clock_synced: bool = True

    def encode(self) -> bytes:
        """`released_at` is the leader's wall clock, marked as readings are when unsynced."""
        payload = asdict(self)
        del payload["clock_synced"]
        if not self.clock_synced:
            payload["clock"] = "unsynced"
        return json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "BarrierState | Garbage":
        if not data:
            return Garbage("empty")
        try:
            return cls.from_payload(json_object(data))
        except Undecodable as error:
            return Garbage(str(error))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "BarrierState":
        """Every field checked (raises Undecodable), so nothing downstream (the status
        line, the CLI's rendering of the last mean) meets a value of the wrong type. A
        `last` that is not an aggregate is dropped rather than the whole barrier: the round
        is what the fleet needs."""
        if "round" not in payload:
            raise Undecodable("no round field")
        return cls(
            round=whole_number(payload["round"], "round"),
            epoch=whole_number(payload.get("epoch", 0), "epoch"),
            leader=text_field(payload.get("leader", ""), "leader"),
            released_at=finite_number(payload.get("released_at", 0.0), "released_at"),
            last=last_aggregate(payload.get("last")),
            clock_synced=payload.get("clock") != "unsynced",
        )


def last_aggregate(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    try:
        return Aggregate.from_payload(value).as_dict()
    except Undecodable:
        return None


@dataclass(frozen=True)
class EpochRecord:
    """The epoch znode's payload: the epoch number (the fencing token every leader write
    checks, by the znode's version) and the node that took office with it; None for
    nobody (a new fleet's epoch 0) or an id no log line could show.

    Earlier releases wrote the leader's id alone and used the znode's version as the
    epoch: such a bare id still decodes, standing for that version."""

    epoch: int
    leader: str | None = None

    def encode(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "leader": self.leader or ""},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None, version: int) -> "EpochRecord | Garbage":
        """`version`: the znode's, which a bare id stands for."""
        if not (data or b"").lstrip().startswith(b"{"):
            bare = bare_id(data)
            if bare is None:
                return Garbage("neither an epoch record nor a leader id")
            return cls(version, bare)
        try:
            payload = json_object(data)
            epoch = whole_number(payload.get("epoch"), "epoch")
        except Undecodable as error:
            return Garbage(str(error))
        return cls(epoch, holder_in(payload))


def epoch_holder(data: bytes | None) -> str | None:
    """The node that took office with this epoch (a bare id in earlier releases), read on
    its own: an epoch znode whose number is garbage may still name its holder."""
    if not (data or b"").lstrip().startswith(b"{"):
        return bare_id(data)
    try:
        return holder_in(json_object(data))
    except Undecodable:
        return None


def holder_in(payload: dict[str, Any]) -> str | None:
    leader = payload.get("leader")
    return leader if isinstance(leader, str) and printable_id(leader) else None


def bare_id(data: bytes | None) -> str | None:
    """An earlier release's epoch znode: the leader's id alone, printable and short."""
    if not data or len(data) > MAX_BARE_ID or data.lstrip().startswith(b"{"):
        return None
    text = data.decode(errors="replace").strip()
    return text if printable_id(text) else None


def printable_id(text: str) -> bool:
    """A lone surrogate (JSON's `\\ud800`) is not printable, so it never reaches a log."""
    return 0 < len(text) <= MAX_BARE_ID and text.isprintable()


@dataclass(frozen=True)
class Incarnation:
    """The incarnation znode's payload: the fleet's identity, a random id created with the
    namespace. Every delivery carries it and the collector fences rounds by it, so a
    namespace rebuilt from nothing is a new fleet, never a replay of the old one."""

    id: str

    @classmethod
    def new(cls) -> "Incarnation":
        return cls(uuid.uuid4().hex)

    def encode(self) -> bytes:
        return self.id.encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "Incarnation | Garbage":
        text = (data or b"").decode(errors="replace").strip()
        if not INCARNATION.fullmatch(text):
            return Garbage("not an incarnation id (1-64 letters, digits, '_' or '-')")
        return cls(text)
