"""A device's reading (`readings/<node>`): the value, when it was taken, the round it
belongs to, and the node's measurement count so far (the counter's freshest record, see
counter.py).

Two optional fields came later and decode to their old meaning when absent, so readings
written by earlier releases still decode: `failures`, the node's failed reads so far, and
`"clock": "unsynced"` on a reading whose `taken_at` came from a wall clock NTP had not
yet synchronised (clock.py).
"""

import json
from dataclasses import dataclass

from zk_sensor.codec import Undecodable, finite_number, json_object, whole_number
from zk_sensor.fleet.payloads.garbage import Garbage


@dataclass(frozen=True)
class Reading:
    """One device's latest measurement as the leader collects it. `node` is the znode's
    name and `stored_at` when ZooKeeper committed it (its mtime, on the ensemble's clock):
    neither is in the payload."""

    node: str
    value: float
    taken_at: float
    round: int
    count: int = 0
    failures: int = 0
    clock_synced: bool = True
    stored_at: float = 0.0

    def encode(self) -> bytes:
        return encode_reading(self.value, self.taken_at, self.round, self.count,
                              self.failures, self.clock_synced)

    @classmethod
    def decode(cls, node: str, data: bytes | None,
               stored_at: float = 0.0) -> "Reading | Garbage":
        """The reading, or Garbage for anything that is not a well-formed one."""
        try:
            payload = json_object(data)
            try:
                value, taken_at = payload["value"], payload["taken_at"]
                round_number = payload["round"]
            except KeyError as missing:
                raise Undecodable(f"not a reading: no {missing} field") from None
            return cls(node=node, value=finite_number(value, "value"),
                       taken_at=finite_number(taken_at, "taken_at"),
                       round=whole_number(round_number, "round"),
                       count=whole_number(payload.get("count", 0), "count"),
                       failures=whole_number(payload.get("failures", 0), "failures"),
                       clock_synced=payload.get("clock") != "unsynced", stored_at=stored_at)
        except Undecodable as error:
            return Garbage(str(error))


def encode_reading(value: float, taken_at: float, round_number: int, count: int,
                   failures: int = 0, clock_synced: bool = True) -> bytes:
    """A reading's payload from its parts (a node publishes without building a Reading)."""
    payload: dict[str, float | int | str] = {
        "value": value, "taken_at": taken_at, "round": round_number, "count": count,
        "failures": failures}
    if not clock_synced:
        payload["clock"] = "unsynced"
    return json.dumps(payload, separators=(",", ":")).encode()
