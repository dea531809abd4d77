"""The outbox: every committed round waits in ZooKeeper until the collector takes it.

A round's aggregate is written under `outbox/<round>` in the very transaction that
releases the barrier (and checks the leader's epoch), so a round exists exactly when it
is pending or delivered. The leader deletes it once the collector answers 2xx (or refuses
it for good). Kept in ZooKeeper, not on one node's disk, so the next leader finds and
delivers what a dead leader could not. Bounded: when full, the oldest round is dropped in
the same transaction that adds the newest, and counted.

The outbox znode's data holds the counts and the round the last release opened, written
with every release, so a barrier lost to an accident resumes from the right round.

Answered rounds are removed in batches, one fenced transaction for up to CLEANUP_BATCH of
them: a leader inheriting a backlog of a thousand rounds clears it in ten commits spread
over ten loop steps, not a thousand commits in one step that outlasts the watchdog.
"""

import json
from dataclasses import asdict, dataclass, replace

from kazoo.client import TransactionRequest

from .aggregate import Aggregate
from .layout import Layout
from .zk import Zk

CLEANUP_BATCH = 100


@dataclass(frozen=True)
class OutboxStats:
    dropped: int = 0
    rejected: int = 0
    released: int = 0


def encode_stats(stats: OutboxStats) -> bytes:
    return json.dumps(asdict(stats)).encode()


def decode_stats(data: bytes | None) -> OutboxStats:
    try:
        payload = json.loads(data or b"{}")
        return OutboxStats(dropped=max(int(payload.get("dropped", 0)), 0),
                           rejected=max(int(payload.get("rejected", 0)), 0),
                           released=max(int(payload.get("released", 0)), 0))
    except (ValueError, TypeError, AttributeError, OverflowError):
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
                         max=float(payload["max"]), time=float(payload["time"]),
                         incarnation=str(payload.get("incarnation", "")),
                         clock_synced=payload.get("clock") != "unsynced")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError,
            OverflowError) as error:
        raise ValueError(f"not a pending round: {error}") from None


@dataclass
class Loaded:
    rounds: list[Aggregate]
    garbage: list[str]
    stats: OutboxStats


def load_outbox(zk: Zk, layout: Layout) -> Loaded:
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


class Outbox:
    """The leader's view of `outbox/`: pending rounds oldest first, the counts, and the
    collector's answers still to be removed. Builds the writes; applies them once they
    committed."""

    def __init__(self, layout: Layout, limit: int) -> None:
        self.layout = layout
        self.limit = limit
        self.pending: list[int] = []
        self.stats = OutboxStats()
        self.answered: dict[int, str] = {}

    def load(self, loaded: Loaded) -> None:
        """As read from ZooKeeper; answers for rounds already gone were removed by a
        commit whose reply was lost."""
        self.pending = [aggregate.round for aggregate in loaded.rounds]
        self.stats = loaded.stats
        self.forget_answers_for_gone_rounds()

    def clear(self) -> None:
        """On a step-down. The collector's answers are kept: they are facts about rounds,
        not about this office, and spare the next office of this node a re-send."""
        self.pending, self.stats = [], OutboxStats()

    def add_release(self, transaction: TransactionRequest, result: Aggregate | None,
                    opened: int) -> tuple[int | None, OutboxStats]:
        """Queue the round in the release transaction and record the round it opens; when
        full, drop the oldest in the same transaction. Returns the dropped round and the
        counts that hold if it commits."""
        stats = replace(self.stats, released=opened)
        dropped = None
        if result is not None:
            transaction.create(self.layout.outbox_round(result.round), encode_pending(result))
            if len(self.pending) >= self.limit:
                dropped = self.pending[0]
                stats = replace(stats, dropped=stats.dropped + 1)
                transaction.delete(self.layout.outbox_round(dropped))
        transaction.set_data(self.layout.outbox, encode_stats(stats))
        return dropped, stats

    def released(self, result: Aggregate | None, dropped: int | None,
                 stats: OutboxStats) -> None:
        if dropped is not None and dropped in self.pending:
            self.pending.remove(dropped)
        if result is not None:
            self.pending.append(result.round)
        self.stats = stats

    def forget_answers_for_gone_rounds(self) -> bool:
        """A round can be answered after it left the outbox: dropped while its delivery
        was in flight, or sent twice across a reload. Deleting it again would fail the whole
        cleanup transaction, every step. True if answers for pending rounds remain."""
        present = set(self.pending)
        self.answered = {number: outcome for number, outcome in self.answered.items()
                         if number in present}
        return bool(self.answered)

    def add_cleanup(self, transaction: TransactionRequest
                    ) -> tuple[list[tuple[int, str]], OutboxStats]:
        """Call after forget_answers_for_gone_rounds, in office."""
        batch = sorted(self.answered.items())[:CLEANUP_BATCH]
        stats = self.stats
        for round_number, outcome in batch:
            transaction.delete(self.layout.outbox_round(round_number))
            if outcome == "rejected":
                stats = replace(stats, rejected=stats.rejected + 1)
        transaction.set_data(self.layout.outbox, encode_stats(stats))
        return batch, stats

    def cleaned(self, batch: list[tuple[int, str]], stats: OutboxStats) -> None:
        done = {round_number for round_number, _ in batch}
        for round_number in done:
            self.answered.pop(round_number, None)
        self.pending = [number for number in self.pending if number not in done]
        self.stats = stats

    def answer(self, round_number: int, outcome: str) -> None:
        """The first answer stands: a second is the collector's "duplicate" of a re-send."""
        self.answered.setdefault(round_number, outcome)
