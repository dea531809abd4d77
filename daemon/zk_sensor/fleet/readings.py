"""Readings: one persistent znode per device, and the leader's batched collection of them.

The payload (payloads/readings.py, `Reading`) is JSON: the value, when it was taken, the
round it belongs to (so the leader can tell this round's readings from those of a device
that fell behind), and the node's measurement count so far, which makes the reading the
counter's freshest record (see counter.py) without a second write per round.
"""

import time
from dataclasses import dataclass, field

from zk_sensor.codec import Undecodable
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import Garbage
from zk_sensor.fleet.payloads import Reading as Reading  # imported from here
from zk_sensor.fleet.payloads import encode_reading as encode_reading  # imported from here
from zk_sensor.zk.interface import Zk


def encode(reading: Reading) -> bytes:
    """`Reading.encode`, under the name node/device.py imports."""
    return reading.encode()


def decode_reading(node: str, data: bytes | None, stored_at: float = 0.0) -> Reading:
    """Raises ValueError (Undecodable) for anything that is not a well-formed reading: the
    older contract node/device.py relies on; `Reading.decode` returns Garbage instead.
    `stored_at` is when ZooKeeper committed it (the znode's mtime), on the ensemble's
    clock."""
    reading = Reading.decode(node, data, stored_at)
    if isinstance(reading, Garbage):
        raise Undecodable(reading.reason)
    return reading


@dataclass
class Collection:
    """One pass over `readings/`, sorted into what the leader aggregates (`readings`, of
    any round), what it skips and names in its round line (`garbage`: unreadable or not a
    reading) and nodes that left between the listing and the read (`vanished`)."""

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
        reading = Reading.decode(node, result[0], result[1].mtime / 1000.0)
        if isinstance(reading, Garbage):
            collection.garbage.append(node)
        else:
            collection.readings.append(reading)
    return collection


def age(reading: Reading, now: float | None = None) -> float:
    return (time.time() if now is None else now) - reading.taken_at
