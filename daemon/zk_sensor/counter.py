"""The fleet's measurement counter, sharded per node so it never contends.

The seed's single counter znode is a compare-and-set loop: when the barrier releases a
whole fleet at once, N nodes race on one version and most of them retry, O(N^2) writes
per round. Here each node owns one shard, `counter/<node id>`, and is its only writer:
its conditional write always wins at the first try, and the fleet total is the sum of
the shards, read (pipelined) by whoever asks.

The node keeps its own count and writes the whole value, not "+1": after a write whose
outcome is unknown (a connection blip), the next write simply re-reads the shard's
version and stores the count again, so no measurement is lost or counted twice.
"""

from kazoo.exceptions import BadVersionError, NoNodeError

from .layout import Layout
from .zk import Zk


def parse_count(data: bytes) -> int:
    """A shard that is not a non-negative integer counts as zero rather than poisoning the sum."""
    try:
        value = int(data.decode().strip())
    except (UnicodeDecodeError, ValueError):
        return 0
    return max(value, 0)


class ShardedCounter:
    def __init__(self, zk: Zk, layout: Layout, node_id: str) -> None:
        self.zk = zk
        self.path = layout.counter_shard(node_id)
        self.count = 0
        self.version: int | None = None

    def load(self) -> int:
        """Start from what this node already counted in earlier lives."""
        self.zk.create_if_missing(self.path, b"0")
        data, stat = self.zk.get(self.path)
        self.count, self.version = parse_count(data), stat.version
        return self.count

    def record_measurement(self) -> None:
        self.count += 1

    def flush(self) -> None:
        """Store the local count; raises a ZooKeeper error if it could not (retried later)."""
        if self.version is None:
            self._refresh_version()
        try:
            stat = self.zk.set(self.path, str(self.count).encode(), version=self.version)
        except (BadVersionError, NoNodeError):
            self._refresh_version()
            stat = self.zk.set(self.path, str(self.count).encode(), version=self.version)
        except Exception:
            self.version = None
            raise
        self.version = stat.version

    def _refresh_version(self) -> None:
        self.zk.create_if_missing(self.path, b"0")
        _, stat = self.zk.get(self.path)
        self.version = stat.version


def fleet_total(zk: Zk, layout: Layout) -> int:
    shards = zk.children_or_none(layout.counter)
    results = zk.get_many(layout.counter_shard(shard) for shard in shards)
    return sum(parse_count(result[0]) for result in results.values() if result is not None)
