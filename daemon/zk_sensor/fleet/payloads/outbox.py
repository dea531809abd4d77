"""The outbox's payloads: a pending round (`outbox/<round>`, an `Aggregate`) and the
outbox znode's own counts (`OutboxStats`).

An aggregate is the round's result as the leader computed it (aggregate.py), delivered to
the collector and copied into the barrier as the last round's. Its `time` is the leader's
wall clock at the close; a leader whose clock NTP has not yet synchronised (clock.py)
marks it `"clock": "unsynced"`, and the collector then stores the round without a
measurement time rather than a wrong one.
"""

import json
from dataclasses import asdict, dataclass
from typing import Any

from zk_sensor.codec import Undecodable, finite_number, json_object, text_field, whole_number
from zk_sensor.fleet.payloads.garbage import Garbage


@dataclass(frozen=True)
class Aggregate:
    """One round's result: what the leader queues in the outbox and delivers, every field
    checked on the way back in (`from_payload`), so nothing downstream meets a value of
    the wrong type."""

    round: int
    epoch: int
    leader: str
    mean: float
    count: int
    min: float
    max: float
    time: float
    incarnation: str = ""
    clock_synced: bool = True

    def as_dict(self) -> dict[str, float | int | str]:
        payload: dict[str, float | int | str] = asdict(self)
        del payload["clock_synced"]
        if not self.clock_synced:
            payload["clock"] = "unsynced"
        return payload

    def encode(self) -> bytes:
        return json.dumps(self.as_dict()).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "Aggregate | Garbage":
        """A pending round as `encode` wrote it, or Garbage."""
        try:
            return cls.from_payload(json_object(data))
        except Undecodable as error:
            return Garbage(str(error))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Aggregate":
        """An aggregate as `as_dict` wrote it (also the barrier's copy of the last one);
        raises Undecodable otherwise: the building block of the total decoders."""
        try:
            return cls(
                round=whole_number(payload["round"], "round"),
                epoch=whole_number(payload["epoch"], "epoch"),
                leader=text_field(payload["leader"], "leader"),
                mean=finite_number(payload["mean"], "mean"),
                count=whole_number(payload["count"], "count"),
                min=finite_number(payload["min"], "min"),
                max=finite_number(payload["max"], "max"),
                time=finite_number(payload["time"], "time"),
                incarnation=text_field(payload.get("incarnation", ""), "incarnation"),
                clock_synced=payload.get("clock") != "unsynced")
        except KeyError as missing:
            raise Undecodable(f"not a round: no {missing} field") from None


@dataclass(frozen=True)
class OutboxStats:
    """The outbox znode's data: rounds dropped from a full outbox, rounds the collector
    refused for good, and the round the last release opened (so a lost barrier resumes
    from the right round). Written with every release and every cleanup."""

    dropped: int = 0
    rejected: int = 0
    released: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "OutboxStats | Garbage":
        """An empty znode (a fresh outbox folder) holds zero counts; a count that is not
        ours reads as zero (the next release writes them afresh); Garbage only for a
        payload that is no JSON object at all."""
        try:
            payload = json_object(data or b"{}")
        except Undecodable as error:
            return Garbage(str(error))
        return cls(**{name: count_or_zero(payload.get(name, 0), name)
                      for name in ("dropped", "rejected", "released")})


def count_or_zero(value: Any, name: str) -> int:
    try:
        return whole_number(value, name)
    except Undecodable:
        return 0
