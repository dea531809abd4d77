"""Where everything lives in ZooKeeper, in one place so the daemon and the CLI agree.

Paths are absolute and carry the namespace explicitly instead of relying on a chroot
in the connection string: the layout is then visible in every log line and in zkCli.
"""

from dataclasses import dataclass

CONFIG_KEYS = ("sampling_period", "api_url")


@dataclass(frozen=True)
class Layout:
    """Every path of one fleet, derived from its namespace, so the daemon, the CLI and the
    collector's fence name the same znodes."""

    namespace: str = "/zk-sensor"

    @property
    def config(self) -> str:
        return f"{self.namespace}/config"

    def config_key(self, key: str) -> str:
        return f"{self.config}/{key}"

    @property
    def readings(self) -> str:
        return f"{self.namespace}/readings"

    def reading(self, node_id: str) -> str:
        return f"{self.readings}/{node_id}"

    @property
    def election(self) -> str:
        return f"{self.namespace}/election"

    @property
    def incarnation(self) -> str:
        """The fleet's identity: a random id created with the namespace, so a namespace
        rebuilt from nothing is a new fleet to the collector, never a replay of the old."""
        return f"{self.namespace}/incarnation"

    @property
    def epoch(self) -> str:
        """The fencing token: taking office bumps the epoch number it holds, and every act
        of a leader checks the znode's version (see office.py)."""
        return f"{self.namespace}/epoch"

    @property
    def barrier(self) -> str:
        return f"{self.namespace}/barrier"

    @property
    def counter(self) -> str:
        return f"{self.namespace}/counter"

    def counter_shard(self, node_id: str) -> str:
        return f"{self.counter}/{node_id}"

    @property
    def outbox(self) -> str:
        """Rounds committed but not yet acknowledged by the collector; its data holds the
        outbox's drop and rejection counts."""
        return f"{self.namespace}/outbox"

    def outbox_round(self, round_number: int) -> str:
        return f"{self.outbox}/{round_number:012d}"

    @property
    def member_acl(self) -> str:
        """The ACL nodes give the znodes they create, written by `zk-sensorctl acl apply`
        (ZooKeeper shows a node the digests of an ACL only with ADMIN rights)."""
        return f"{self.namespace}/member-acl"

    @property
    def switchover(self) -> str:
        """The operator's request that the leader hand over (switchover.py). Persistent and
        empty between requests: `acl apply` creates it under the config's ACL, so the fleet,
        which may create znodes in the namespace root, can never create it as its own."""
        return f"{self.namespace}/switchover"

    @property
    def revoked(self) -> str:
        """The user names `zk-sensorctl node revoke` removed from the fleet (JSON list),
        so a later `acl apply` with a stale members file does not admit them again."""
        return f"{self.namespace}/revoked"

    def operator_znodes(self) -> tuple[str, ...]:
        """Written by the operator only; members may read them, anyone else not at all."""
        return (self.config, self.member_acl, self.switchover, self.revoked)

    def persistent_dirs(self) -> tuple[str, ...]:
        return (self.config, self.readings, self.election, self.counter, self.outbox)
