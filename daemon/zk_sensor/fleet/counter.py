"""The fleet's measurement counter: the count every reading carries, summed.

The seed's single counter znode is a compare-and-set loop: when the barrier releases a
whole fleet at once, N nodes race on one version and most of them retry, O(N^2) writes
per round. Here each node's reading znode carries the node's whole count so far, and the
reading is persistent: the write that publishes a measurement is the write that counts
it, atomically, so the counter is exact whatever happens next (a SIGKILL, a lost
session, a node that never comes back), at one write per device-round.

A node writes its whole count, never "+1": after a write whose outcome is unknown it
writes the same count again, so nothing is lost or counted twice.

Fleets started by earlier releases kept counts in per-node shards, `counter/<node id>`;
they are still read, each node counting as the larger of its shard and its reading.
"""

from zk_sensor.codec import MAX_WHOLE
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.readings import Collection
from zk_sensor.zk.errors import NoNodeError
from zk_sensor.zk.interface import Zk

MAX_COUNT_CHARS = 32


def parse_count(data: bytes) -> int:
    """A shard that is not a count (a 64-bit one, as every reading's) counts as zero rather
    than poisoning the sum, or the node's readings, which carry its count on."""
    if len(data) > MAX_COUNT_CHARS:
        return 0
    try:
        value = int(data.decode().strip())
    except (UnicodeDecodeError, ValueError):
        return 0
    return value if 0 <= value <= MAX_WHOLE else 0


def own_count(zk: Zk, layout: Layout, node_id: str, published: int) -> int:
    """Where a node's count resumes: its last reading, or an earlier release's shard."""
    try:
        data, _ = zk.get(layout.counter_shard(node_id))
    except NoNodeError:
        return published
    return max(parse_count(data), published)


def fleet_total(zk: Zk, layout: Layout, readings: Collection) -> int:
    """Every reading's count, each raised to its node's old shard where that is ahead."""
    shards = zk.children_or_none(layout.counter)
    results = zk.get_many(layout.counter_shard(shard) for shard in shards)
    counts = {}
    for shard in shards:
        result = results[layout.counter_shard(shard)]
        counts[shard] = parse_count(result[0]) if result is not None else 0
    for reading in readings.readings:
        counts[reading.node] = max(counts.get(reading.node, 0), reading.count)
    return sum(counts.values())
