"""The fleet's measurement counter: per-node shards, and the reading as the fresh record.

The seed's single counter znode is a compare-and-set loop: when the barrier releases a
whole fleet at once, N nodes race on one version and most of them retry, O(N^2) writes
per round. Here each node owns one shard, `counter/<node id>`, and is its only writer, so
its conditional write always wins at the first try.

A shard write every round would double the fleet's write load (a reading and a count per
device-round). Instead every reading carries the node's count so far, and the shard is
written only every `flush_every` measurements, when the node stops, and after a session
loss. The fleet total is, per node, the larger of its shard and its live reading's count:
exact while a node runs (its reading is current) and after it stops (its shard is).

The node writes its whole count, never "+1": after a write whose outcome is unknown (a
connection blip), the next write re-reads the shard's version and stores the count again,
so no measurement is lost or counted twice.
"""

from kazoo.exceptions import BadVersionError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from .layout import Layout
from .readings import Collection
from .zk import Zk


def parse_count(data: bytes) -> int:
    """A shard that is not a non-negative integer counts as zero rather than poisoning the sum."""
    try:
        value = int(data.decode().strip())
    except (UnicodeDecodeError, ValueError):
        return 0
    return max(value, 0)


class ShardedCounter:
    def __init__(self, zk: Zk, layout: Layout, node_id: str, flush_every: int) -> None:
        self.zk = zk
        self.path = layout.counter_shard(node_id)
        self.flush_every = flush_every
        self.count = 0
        self.stored = 0
        self.version: int | None = None

    def load(self, published: int = 0) -> int:
        """Start from what this node counted in earlier lives: its shard, or the count in
        a reading its previous session left behind (a restart after a crash), if higher."""
        data, stat = self._read_shard()
        self.stored, self.version = parse_count(data), stat.version
        self.count = max(self.count, self.stored, published)
        return self.count

    def record_measurement(self) -> None:
        self.count += 1

    @property
    def flush_due(self) -> bool:
        return self.count - self.stored >= self.flush_every

    @property
    def unflushed(self) -> bool:
        return self.count > self.stored

    def flush(self) -> None:
        """Store the local count; raises a ZooKeeper error if it could not (retried later)."""
        if self.version is None:
            self._refresh_version()
        count = self.count
        try:
            stat = self.zk.set(self.path, str(count).encode(), version=self.version)
        except (BadVersionError, NoNodeError):
            self._refresh_version()
            stat = self.zk.set(self.path, str(count).encode(), version=self.version)
        except Exception:
            self.version = None
            raise
        self.version, self.stored = stat.version, count

    def _refresh_version(self) -> None:
        self.version = self._read_shard()[1].version

    def _read_shard(self) -> tuple[bytes, ZnodeStat]:
        """The shard, created empty first if this node never counted."""
        self.zk.create_if_missing(self.path, b"0")
        return self.zk.get(self.path)


def fleet_total(zk: Zk, layout: Layout, readings: Collection) -> int:
    """Every shard, each raised to its node's live reading's count where that is ahead.

    `readings` must be read before the shards: a node that flushes and stops in between
    is then still counted by its shard."""
    shards = zk.children_or_none(layout.counter)
    results = zk.get_many(layout.counter_shard(shard) for shard in shards)
    counts = {}
    for shard in shards:
        result = results[layout.counter_shard(shard)]
        counts[shard] = parse_count(result[0]) if result is not None else 0
    for reading in readings.readings:
        counts[reading.node] = max(counts.get(reading.node, 0), reading.count)
    return sum(counts.values())
