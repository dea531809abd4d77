"""The fence against ZooKeeper: a keyed round is stored only if the fleet's leader, as
ZooKeeper knows it, may deliver it now.

A token proves only that the poster is one of the fleet's nodes, not that it leads: any
token holder could post a round with epoch 2^63-1 (every real delivery is then answered
409, and the leader steps down for good), or post round numbers ahead of the fleet (the
real rounds come back "duplicate" and leave the outbox unstored). ZooKeeper holds the
truth, so the collector reads it, read-only, before storing:

- the round's epoch is at most the one in `<fleet>/epoch` (a leader stamps the epoch it
  holds, and a new leader's epoch is committed before it delivers anything);
- its round number is below the one in `<fleet>/barrier` (a leader releases round r + 1
  in the same transaction that closes round r, before delivering r);
- its incarnation, if it names one, is the fleet's in `<fleet>/incarnation`;
- with a per-node credential, its name is the epoch's holder: only the current leader
  delivers, rounds inherited from older epochs included.

A refusal is double-checked after a `sync` (the server this session reads from may lag
the commit). ZooKeeper out of reach is a 503 with Retry-After: the daemon keeps the round
and sends it again; an unchecked round is never stored. Every call has a deadline.
"""

import logging
from dataclasses import dataclass

from zk_sensor.collector.auth import ANONYMOUS, SHARED
from zk_sensor.collector.parse import Refused
from zk_sensor.collector.settings import CollectorSettings
from zk_sensor.collector.store import Round
from zk_sensor.fleet.barrier import decode_barrier
from zk_sensor.fleet.coordination import decode_epoch, decode_incarnation, epoch_holder
from zk_sensor.zk.access import ZkAccess
from zk_sensor.zk.client import KazooZk, new_client
from zk_sensor.zk.errors import UNKNOWN_OR_REFUSED, NotConnected

log = logging.getLogger("zk_collector")
# Seconds for each ZooKeeper call; two reads and a sync stay well inside the request's
# deadline (server.REQUEST_DEADLINE).
CALL_DEADLINE = 2.0
SESSION_TIMEOUT = 10.0
RETRY_AFTER = "2"


@dataclass(frozen=True)
class FleetView:
    """The three znodes as read: (data, version) or None where missing."""
    epoch: tuple[bytes, int] | None
    barrier: bytes | None
    incarnation: bytes | None


def judge(view: FleetView, item: Round, who: str) -> str | None:
    """Why the fleet's leader could not be delivering this round now, or None."""
    assert item.round is not None and item.epoch is not None
    if view.epoch is None:
        return f"fleet {item.fleet} has no epoch in ZooKeeper"
    epoch = decode_epoch(*view.epoch)
    if epoch is None:
        return f"fleet {item.fleet}'s epoch znode is unreadable"
    if item.epoch > epoch:
        return f"epoch {item.epoch} is ahead of fleet {item.fleet}'s epoch {epoch}"
    barrier = decode_barrier(view.barrier)
    if barrier is None:
        return f"fleet {item.fleet}'s barrier is missing or unreadable"
    if item.round >= barrier.round:
        return (f"round {item.round} is not released: fleet {item.fleet} is at round "
                f"{barrier.round}")
    incarnation = decode_incarnation(view.incarnation)
    if item.incarnation is not None and item.incarnation != incarnation:
        return (f"incarnation {item.incarnation} is not fleet {item.fleet}'s "
                f"({incarnation})")
    holder = epoch_holder(view.epoch[0])
    if who not in (ANONYMOUS, SHARED) and who != holder:
        return f"credential {who!r} is not the leader of epoch {epoch} ({holder!r} is)"
    return None


class ZkFence:
    """The collector's one session with ZooKeeper: it checks a keyed round against the
    fleet's epoch and barrier before the round is stored."""
    def __init__(self, zk: KazooZk) -> None:
        self.zk = zk

    @classmethod
    def connect(cls, settings: CollectorSettings) -> "ZkFence":
        """Connects in the background: a check before the session is up answers 503."""
        access = ZkAccess(None, settings.fence_zk_ca_file, settings.fence_zk_cert_file,
                          settings.fence_zk_key_file)
        zk = KazooZk(new_client(settings.fence_zookeeper, SESSION_TIMEOUT, access),
                     CALL_DEADLINE)
        zk.start_in_background()
        log.info("fence: checking keyed rounds against ZooKeeper %s (%s)",
                 settings.fence_zookeeper, access.describe())
        return cls(zk)

    def close(self) -> None:
        self.zk.close()

    def check(self, item: Round, who: str) -> None:
        """Raises Refused: 403 for a round the leader could not be delivering, 503 when
        ZooKeeper cannot say."""
        try:
            problem = judge(self.read(item.fleet or "", synced=False), item, who)
            if problem is not None:
                problem = judge(self.read(item.fleet or "", synced=True), item, who)
        except UNKNOWN_OR_REFUSED as error:
            raise Refused("503 Service Unavailable", "cannot check the round against "
                          f"ZooKeeper now ({type(error).__name__}); send it again later",
                          [("Retry-After", RETRY_AFTER)]) from None
        if problem is not None:
            raise Refused("403 Forbidden", f"fenced: {problem}")

    def read(self, fleet: str, synced: bool) -> FleetView:
        if not self.zk.connected:
            raise NotConnected()
        paths = [f"{fleet}/epoch", f"{fleet}/barrier", f"{fleet}/incarnation"]
        found = self.zk.synced_get_many(paths) if synced else self.zk.get_many(paths)
        epoch, barrier, incarnation = (found[path] for path in paths)
        return FleetView(None if epoch is None else (epoch[0], epoch[1].version),
                         None if barrier is None else barrier[0],
                         None if incarnation is None else incarnation[0])

