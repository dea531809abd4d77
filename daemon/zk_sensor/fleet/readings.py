"""Readings: one persistent znode per device, and the leader's batched collection of them.

A reading's payload is JSON: the value, when it was taken, the round it belongs to (so
the leader can tell this round's readings from those of a device that fell behind), and
the node's measurement count so far, which makes the reading the counter's freshest
record (see counter.py) without a second write per round. Two optional fields came
later and decode to their old meaning when absent, so readings written by earlier
releases still decode: `failures`, the node's failed reads so far, and `"clock":
"unsynced"` on a reading whose `taken_at` came from a wall clock NTP had not yet
synchronised (clock.py).
"""

import json
import time
from dataclasses import dataclass, field

from zk_sensor.codec import Undecodable, finite_number, json_object, whole_number
from zk_sensor.fleet.layout import Layout
from zk_sensor.zk.client import Zk


@dataclass(frozen=True)
class Reading:
    node: str
    value: float
    taken_at: float
    round: int
    count: int = 0
    failures: int = 0
    clock_synced: bool = True
    stored_at: float = 0.0


def encode_reading(value: float, taken_at: float, round_number: int, count: int,
                   failures: int = 0, clock_synced: bool = True) -> bytes:
    payload: dict[str, float | int | str] = {
        "value": value, "taken_at": taken_at, "round": round_number, "count": count,
        "failures": failures}
    if not clock_synced:
        payload["clock"] = "unsynced"
    return json.dumps(payload, separators=(",", ":")).encode()


def encode(reading: Reading) -> bytes:
    return encode_reading(reading.value, reading.taken_at, reading.round, reading.count,
                          reading.failures, reading.clock_synced)


def decode_reading(node: str, data: bytes | None, stored_at: float = 0.0) -> Reading:
    """Raises ValueError (Undecodable) for anything that is not a well-formed reading.
    `stored_at` is when ZooKeeper committed it (the znode's mtime), on the ensemble's
    clock."""
    payload = json_object(data)
    try:
        value, taken_at, round_number = payload["value"], payload["taken_at"], payload["round"]
    except KeyError as missing:
        raise Undecodable(f"not a reading: no {missing} field") from None
    return Reading(node=node, value=finite_number(value, "value"),
                   taken_at=finite_number(taken_at, "taken_at"),
                   round=whole_number(round_number, "round"),
                   count=whole_number(payload.get("count", 0), "count"),
                   failures=whole_number(payload.get("failures", 0), "failures"),
                   clock_synced=payload.get("clock") != "unsynced", stored_at=stored_at)


@dataclass
class Collection:
    readings: list[Reading] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)

    def for_round(self, round_number: int) -> list[Reading]:
        return [reading for reading in self.readings if reading.round == round_number]


def collect_readings(zk: Zk, layout: Layout) -> Collection:
    """Every device's reading, tolerating devices that leave between list and read; a
    reading that is unreadable (its ACL) or not a reading is garbage, skipped."""
    nodes = sorted(zk.children_or_none(layout.readings))
    refused: set[str] = set()
    raw = zk.get_many((layout.reading(node) for node in nodes), refused)
    collection = Collection()
    for node in nodes:
        if layout.reading(node) in refused:
            collection.garbage.append(node)
            continue
        result = raw[layout.reading(node)]
        if result is None:
            collection.vanished.append(node)
            continue
        try:
            collection.readings.append(decode_reading(node, result[0],
                                                      result[1].mtime / 1000.0))
        except Undecodable:
            collection.garbage.append(node)
    return collection


def age(reading: Reading, now: float | None = None) -> float:
    return (time.time() if now is None else now) - reading.taken_at
