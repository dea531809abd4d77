"""The round barrier: the leader paces the fleet, as in the seed, without its race.

The seed creates `/barrier`, waits a period, then deletes it; a device that checks in
between a delete and the next create passes twice, and one that checks late misses a
round. Here the barrier is a single persistent znode whose payload is the number of the
round now open. Devices that measured round r wait until the barrier shows a round
greater than r; the leader releases everyone at once by writing r + 1, in a transaction
that also checks its fencing epoch. Nothing to miss, nothing to pass twice, and the
payload carries the previous round's aggregate so every node (and the CLI) can show it.
"""

import logging
import time
from dataclasses import dataclass, field

from zk_sensor.fleet.aggregate import Aggregate
from zk_sensor.fleet.payloads import BarrierState as BarrierState  # imported from here
from zk_sensor.fleet.payloads import Garbage, or_none
from zk_sensor.zk.interface import Transaction, ZnodeStat

log = logging.getLogger("zk_sensor")

def encode_barrier(state: BarrierState) -> bytes:
    """`BarrierState.encode`, under the name node/leader.py imports."""
    return state.encode()


def decode_barrier(data: bytes | None) -> BarrierState | None:
    """None for a barrier that is missing or garbage (`BarrierState.decode` says why):
    the contract collector/fence.py relies on."""
    return or_none(BarrierState.decode(data))


def next_round(
    current: BarrierState, *, epoch: int, leader: str, now: float, last: Aggregate | None,
    clock_synced: bool = True,
) -> BarrierState:
    """The barrier that releases `current`: the next round, opened by this leader, with
    this round's aggregate as the last one (or the previous last, for an empty round)."""
    return BarrierState(
        round=current.round + 1,
        epoch=epoch,
        leader=leader,
        released_at=now,
        last=last.as_dict() if last else current.last,
        clock_synced=clock_synced,
    )


def add_release(
    transaction: Transaction, path: str, state: BarrierState, version: int
) -> None:
    """The write that releases the fleet; fails (and rolls back) if anyone else moved it."""
    transaction.set_data(path, state.encode(), version=version)


@dataclass
class BarrierView:
    """The barrier as this node last saw it, shared by the follower's and the leader's code.

    A znode's version restarts at 0 when it is deleted and created again, so a newer
    barrier is one with a higher version or a different creation (czxid)."""
    state: BarrierState | None = None
    version: int = -1
    created: int = 0
    stored_at: float = 0.0
    changed_at: float = field(default_factory=time.monotonic)
    garbage_logged: tuple[int, int] | None = None
    stall_warned: bool = False

    def is_newer(self, stat: ZnodeStat) -> bool:
        return bool(stat.czxid != self.created or stat.version > self.version)

    def accept(self, data: bytes | None, stat: ZnodeStat) -> bool:
        """True if the barrier moved; garbage is logged once per version and ignored."""
        if not self.is_newer(stat):
            return False
        state = BarrierState.decode(data)
        if isinstance(state, Garbage):
            if self.garbage_logged != (stat.czxid, stat.version):
                self.garbage_logged = (stat.czxid, stat.version)
                log.error("barrier znode holds garbage (version %d: %s); waiting for the "
                          "leader to repair it", stat.version, state.reason)
            return False
        self.state, self.version, self.created = state, stat.version, stat.czxid
        self.stored_at = stat.mtime / 1000.0
        self.changed_at = time.monotonic()
        self.stall_warned = False
        return True
