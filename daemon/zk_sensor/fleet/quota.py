"""The ensemble around the namespace: the root `/` and ZooKeeper's quota on the namespace.

ZooKeeper creates `/` and `/zookeeper` writable by anyone: any client could create
znodes beside the fleet's, squat another namespace or change those ACLs. `--lock-root`
gives both to the operator, anyone reading.

A quota bounds what a stolen member credential can pile into the namespace (ZooKeeper's
whole data tree lives in every server's memory). ZooKeeper keeps it in
`/zookeeper/quota<namespace>/zookeeper_limits`; servers 3.8 refuse a create or a write
beyond its *hard* limits (`countHardLimit`, `byteHardLimit`) when started with
`-Dzookeeper.enforceQuota=true`, and only log past the soft ones (`count`, `bytes`), so
both are written. The server keeps the usage in `zookeeper_stats`, which it fills in when
the znode is created. Everything under `/zookeeper/quota` is open to anyone by default, so
the quota path is locked to the operator: no member can lift it.

Defaults, for fleets up to 1,000 nodes (docs/how-to/acls.md, "The root and the quota"):
per node a reading, two candidates (during a switchover) and an earlier release's counter
shard, 4,000; the outbox's 1,000 rounds; about 20 fixed znodes; twice that, 10,000
znodes. Data: readings up to 256 bytes, outbox rounds up to 512 bytes, the member ACL 50
bytes per node, about 0.8 MB; twice that, 2 MB (count and bytes are of the data only, not
the names).
"""

import builtins
from dataclasses import dataclass

from zk_sensor.fleet.acl import ANYONE_READS, digest_acl, set_acl_if_needed
from zk_sensor.fleet.layout import Layout
from zk_sensor.zk.errors import NodeExistsError
from zk_sensor.zk.interface import ACL, Permissions, Zk

DEFAULT_MAX_ZNODES = 10_000
DEFAULT_MAX_BYTES = 2_000_000
QUOTA_ROOT = "/zookeeper/quota"
LIMITS = "zookeeper_limits"
STATS = "zookeeper_stats"


@dataclass(frozen=True)
class Quota:
    """ZooKeeper's limits on the namespace (znodes and data bytes), as the quota znode
    holds them: what a stolen member credential can pile into the servers' memory."""

    znodes: int
    bytes: int

    def encode(self) -> "builtins.bytes":
        return (f"count={self.znodes},bytes={self.bytes},"
                f"countHardLimit={self.znodes},byteHardLimit={self.bytes}").encode()


def operator_only(operator: str) -> list[ACL]:
    return [digest_acl(operator, Permissions.ALL), ANYONE_READS]


def lock_root(zk: Zk, operator: str) -> list[str]:
    """`/` and `/zookeeper`: the operator's, anyone reads. One line per change."""
    return [f"locked {path}" for path in ("/", "/zookeeper")
            if set_acl_if_needed(zk, path, operator_only(operator))]


def create_locked(zk: Zk, path: str, data: bytes, acls: list[ACL]) -> bool:
    if zk.exists(path) is not None:
        return False
    try:
        zk.create(path, data, acl=acls)
    except NodeExistsError:
        return False
    return True


def update(zk: Zk, path: str, data: bytes) -> bool:
    current, _ = zk.get(path)
    if current == data:
        return False
    zk.set(path, data)
    return True


def quota_path(layout: Layout) -> str:
    return QUOTA_ROOT + layout.namespace


def set_quota(zk: Zk, layout: Layout, quota: Quota, operator: str) -> list[str]:
    """Create or correct the namespace's limits and lock the quota path; one line per
    change. The stats znode is created after the limits, as zkCli does: its creation is
    what makes the server start counting."""
    acls = operator_only(operator)
    base = quota_path(layout)
    components = base[len(QUOTA_ROOT):].strip("/").split("/")
    folders = [QUOTA_ROOT + "/" + "/".join(components[:depth])
               for depth in range(1, len(components) + 1)]
    for folder in folders:
        create_locked(zk, folder, b"", acls)
    limits, stats = f"{base}/{LIMITS}", f"{base}/{STATS}"
    lines = []
    if create_locked(zk, limits, quota.encode(), acls) or update(zk, limits, quota.encode()):
        lines.append(f"quota of {layout.namespace} set to {quota.znodes} znodes, "
                     f"{quota.bytes} bytes")
    create_locked(zk, stats, b"count=0,bytes=0", acls)
    for path in ("/zookeeper", QUOTA_ROOT, *folders, limits, stats):
        if set_acl_if_needed(zk, path, acls):
            lines.append(f"locked {path}")
    return lines
