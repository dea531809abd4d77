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
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.client import TransactionRequest

from .aggregate import Aggregate


@dataclass(frozen=True)
class BarrierState:
    round: int
    epoch: int = 0
    leader: str = ""
    released_at: float = 0.0
    last: dict[str, Any] | None = None


def encode_barrier(state: BarrierState) -> bytes:
    return json.dumps(asdict(state), separators=(",", ":")).encode()


def decode_barrier(data: bytes | None) -> BarrierState | None:
    """None for a barrier that is missing or unreadable; the loop re-checks later."""
    if not data:
        return None
    try:
        payload = json.loads(data.decode())
        return BarrierState(
            round=int(payload["round"]),
            epoch=int(payload.get("epoch", 0)),
            leader=str(payload.get("leader", "")),
            released_at=float(payload.get("released_at", 0.0)),
            last=payload.get("last") if isinstance(payload.get("last"), dict) else None,
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def next_round(
    current: BarrierState, *, epoch: int, leader: str, now: float, last: Aggregate | None
) -> BarrierState:
    return BarrierState(
        round=current.round + 1,
        epoch=epoch,
        leader=leader,
        released_at=now,
        last=last.as_dict() if last else current.last,
    )


def add_release(
    transaction: TransactionRequest, path: str, state: BarrierState, version: int
) -> None:
    """The write that releases the fleet; fails (and rolls back) if anyone else moved it."""
    transaction.set_data(path, encode_barrier(state), version=version)
