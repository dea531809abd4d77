"""The outbox: every committed round waits in ZooKeeper until the collector takes it.

A round's aggregate is written under `outbox/<round>` in the very transaction that
releases the barrier (and checks the leader's epoch), so a round exists exactly when it
is pending or delivered. The leader deletes it once the collector answers 2xx (or refuses
it for good). Kept in ZooKeeper, not on one node's disk, so the next leader finds and
delivers what a dead leader could not. Bounded: when full, the oldest round is dropped in
the same transaction that adds the newest, and counted.
"""

import json
from dataclasses import asdict, dataclass

from kazoo.client import TransactionRequest

from .aggregate import Aggregate
from .layout import Layout
from .zk import Zk


@dataclass
class OutboxStats:
    dropped: int = 0
    rejected: int = 0


def encode_stats(stats: OutboxStats) -> bytes:
    return json.dumps(asdict(stats)).encode()


def decode_stats(data: bytes | None) -> OutboxStats:
    try:
        payload = json.loads(data or b"{}")
        return OutboxStats(dropped=int(payload.get("dropped", 0)),
                           rejected=int(payload.get("rejected", 0)))
    except (ValueError, TypeError, AttributeError):
        return OutboxStats()


def encode_pending(aggregate: Aggregate) -> bytes:
    return json.dumps(aggregate.as_dict()).encode()


def decode_pending(data: bytes) -> Aggregate:
    """Raises ValueError for a znode that is not a round we wrote."""
    try:
        payload = json.loads(data)
        return Aggregate(round=int(payload["round"]), epoch=int(payload["epoch"]),
                         leader=str(payload["leader"]), mean=float(payload["mean"]),
                         count=int(payload["count"]), min=float(payload["min"]),
                         max=float(payload["max"]), time=float(payload["time"]))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a pending round: {error}") from None


@dataclass
class Loaded:
    rounds: list[Aggregate]
    garbage: list[str]
    stats: OutboxStats


def load(zk: Zk, layout: Layout) -> Loaded:
    """What a new leader inherits: pending rounds oldest first, and the counts."""
    data, _ = zk.get(layout.outbox)
    names = sorted(zk.children(layout.outbox))
    found = zk.get_many(f"{layout.outbox}/{name}" for name in names)
    rounds, garbage = [], []
    for name in names:
        result = found[f"{layout.outbox}/{name}"]
        if result is None:
            continue
        try:
            rounds.append(decode_pending(result[0]))
        except ValueError:
            garbage.append(name)
    rounds.sort(key=lambda aggregate: aggregate.round)
    return Loaded(rounds, garbage, decode_stats(data))


def add_pending(transaction: TransactionRequest, layout: Layout, aggregate: Aggregate) -> None:
    transaction.create(layout.outbox_round(aggregate.round), encode_pending(aggregate))


def add_drop(transaction: TransactionRequest, layout: Layout, round_number: int,
             stats: OutboxStats) -> None:
    transaction.delete(layout.outbox_round(round_number))
    transaction.set_data(layout.outbox, encode_stats(stats))
