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
import math
import time
from dataclasses import dataclass, field

from .layout import Layout
from .zk import Zk


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


def decode_reading(node: str, data: bytes, stored_at: float = 0.0) -> Reading:
    """Raises ValueError for anything that is not a well-formed reading. `stored_at` is
    when ZooKeeper committed it (the znode's mtime), on the ensemble's clock."""
    try:
        payload = json.loads(data.decode())
        value = float(payload["value"])
        taken_at = float(payload["taken_at"])
        round_number = int(payload["round"])
        count = max(int(payload.get("count", 0)), 0)
        failures = max(int(payload.get("failures", 0)), 0)
        clock_synced = payload.get("clock") != "unsynced"
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            AttributeError, OverflowError) as error:
        raise ValueError(f"malformed reading payload: {error}") from None
    if not (math.isfinite(value) and math.isfinite(taken_at)):
        raise ValueError("reading is not a finite number")
    return Reading(node=node, value=value, taken_at=taken_at, round=round_number, count=count,
                   failures=failures, clock_synced=clock_synced, stored_at=stored_at)


@dataclass
class Collection:
    readings: list[Reading] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)

    def for_round(self, round_number: int) -> list[Reading]:
        return [reading for reading in self.readings if reading.round == round_number]


def collect_readings(zk: Zk, layout: Layout) -> Collection:
    """Every device's reading, tolerating devices that leave between list and read."""
    nodes = sorted(zk.children_or_none(layout.readings))
    raw = zk.get_many(layout.reading(node) for node in nodes)
    collection = Collection()
    for node in nodes:
        result = raw[layout.reading(node)]
        if result is None:
            collection.vanished.append(node)
            continue
        try:
            collection.readings.append(decode_reading(node, result[0],
                                                      result[1].mtime / 1000.0))
        except ValueError:
            collection.garbage.append(node)
    return collection


def age(reading: Reading, now: float | None = None) -> float:
    return (time.time() if now is None else now) - reading.taken_at
