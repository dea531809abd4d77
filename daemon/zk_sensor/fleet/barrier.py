"""The round barrier: the leader paces the fleet, as in the seed, without its race.

The seed creates `/barrier`, waits a period, then deletes it; a device that checks in
between a delete and the next create passes twice, and one that checks late misses a
round. Here the barrier is a single persistent znode whose payload is the number of the
round now open. Devices that measured round r wait until the barrier shows a round
greater than r; the leader releases everyone at once by writing r + 1, in a transaction
that also checks its fencing epoch. Nothing to miss, nothing to pass twice, and the
payload carries the previous round's aggregate so every node (and the CLI) can show it.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kazoo.client import TransactionRequest
from kazoo.protocol.states import ZnodeStat

from zk_sensor.codec import Undecodable, finite_number, json_object, text_field, whole_number
from zk_sensor.fleet.aggregate import Aggregate
from zk_sensor.fleet.outbox import aggregate_from

log = logging.getLogger("zk_sensor")


@dataclass(frozen=True)
class BarrierState:
    round: int
    epoch: int = 0
    leader: str = ""
    released_at: float = 0.0
    last: dict[str, Any] | None = None
    clock_synced: bool = True


def encode_barrier(state: BarrierState) -> bytes:
    """`released_at` is the leader's wall clock, marked as readings are when unsynced."""
    payload = asdict(state)
    del payload["clock_synced"]
    if not state.clock_synced:
        payload["clock"] = "unsynced"
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_barrier(data: bytes | None) -> BarrierState | None:
    """None for a barrier that is missing or unreadable; the loop re-checks later."""
    try:
        return barrier_from(json_object(data)) if data else None
    except Undecodable:
        return None


def barrier_from(payload: dict[str, Any]) -> BarrierState:
    """Every field checked, so nothing downstream (the status line, the CLI's rendering
    of the last mean) meets a value of the wrong type. A `last` that is not an aggregate
    is dropped rather than the whole barrier: the round is what the fleet needs."""
    if "round" not in payload:
        raise Undecodable("no round field")
    return BarrierState(
        round=whole_number(payload["round"], "round"),
        epoch=whole_number(payload.get("epoch", 0), "epoch"),
        leader=text_field(payload.get("leader", ""), "leader"),
        released_at=finite_number(payload.get("released_at", 0.0), "released_at"),
        last=last_aggregate(payload.get("last")),
        clock_synced=payload.get("clock") != "unsynced",
    )


def last_aggregate(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    try:
        return aggregate_from(value).as_dict()
    except Undecodable:
        return None


def next_round(
    current: BarrierState, *, epoch: int, leader: str, now: float, last: Aggregate | None,
    clock_synced: bool = True,
) -> BarrierState:
    return BarrierState(
        round=current.round + 1,
        epoch=epoch,
        leader=leader,
        released_at=now,
        last=last.as_dict() if last else current.last,
        clock_synced=clock_synced,
    )


def add_release(
    transaction: TransactionRequest, path: str, state: BarrierState, version: int
) -> None:
    """The write that releases the fleet; fails (and rolls back) if anyone else moved it."""
    transaction.set_data(path, encode_barrier(state), version=version)


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
        return stat.czxid != self.created or stat.version > self.version

    def accept(self, data: bytes | None, stat: ZnodeStat) -> bool:
        """True if the barrier moved; garbage is logged once per version and ignored."""
        if not self.is_newer(stat):
            return False
        state = decode_barrier(data)
        if state is None:
            if self.garbage_logged != (stat.czxid, stat.version):
                self.garbage_logged = (stat.czxid, stat.version)
                log.error("barrier znode holds garbage (version %d); waiting for the leader "
                          "to repair it", stat.version)
            return False
        self.state, self.version, self.created = state, stat.version, stat.czxid
        self.stored_at = stat.mtime / 1000.0
        self.changed_at = time.monotonic()
        self.stall_warned = False
        return True
