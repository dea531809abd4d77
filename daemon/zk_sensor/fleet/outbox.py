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

from dataclasses import dataclass, replace
from enum import StrEnum

from zk_sensor.codec import Undecodable
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import Aggregate, Garbage
from zk_sensor.fleet.payloads import OutboxStats as OutboxStats  # imported from here
from zk_sensor.zk.interface import Transaction, Zk

CLEANUP_BATCH = 100


def decode_stats(data: bytes | None) -> OutboxStats:
    """Counts that are not ours read as zero: the next release writes them afresh."""
    stats = OutboxStats.decode(data)
    return OutboxStats() if isinstance(stats, Garbage) else stats


def encode_pending(aggregate: Aggregate) -> bytes:
    return aggregate.encode()


def decode_pending(data: bytes | None) -> Aggregate:
    """Raises Undecodable (a ValueError) for a znode that is not a round we wrote: the
    older contract, for the tests that use it; `Aggregate.decode` returns Garbage."""
    pending = Aggregate.decode(data)
    if isinstance(pending, Garbage):
        raise Undecodable(pending.reason)
    return pending



class Outcome(StrEnum):
    """What became of one round at the collectors, as the leader acts on it: DELIVERED and
    REJECTED leave the outbox (a refused round never will be accepted), FENCED means a
    newer leader holds the epoch (step down), RETRY keeps it pending."""

    DELIVERED = "delivered"
    FENCED = "fenced"
    REJECTED = "rejected"
    RETRY = "retry"

@dataclass
class Loaded:
    """The outbox as a new leader inherits it: its pending rounds oldest first, the names
    of entries that are no round (to be removed) and the counts (`stats_read`: False when
    they were garbage and read as zero, so they prove nothing about the last round)."""
    rounds: list[Aggregate]
    garbage: list[str]
    stats: OutboxStats
    stats_read: bool = True


def load_outbox(zk: Zk, layout: Layout) -> Loaded:
    """What a new leader inherits: pending rounds oldest first, and the counts. An entry
    is garbage unless it is a round stored under its own number: the leader removes a
    round by that name, and a misnamed one would fail every cleanup."""
    data, _ = zk.get(layout.outbox)
    names = sorted(zk.children(layout.outbox))
    refused: set[str] = set()
    found = zk.get_many((f"{layout.outbox}/{name}" for name in names), refused)
    rounds, garbage = [], []
    for name in names:
        path = f"{layout.outbox}/{name}"
        if path in refused:
            garbage.append(name)
            continue
        if (result := found[path]) is None:
            continue
        pending = Aggregate.decode(result[0])
        if isinstance(pending, Garbage):
            garbage.append(name)
            continue
        if layout.outbox_round(pending.round) == path:
            rounds.append(pending)
        else:
            garbage.append(name)
    rounds.sort(key=lambda aggregate: aggregate.round)
    stats = OutboxStats.decode(data)
    if isinstance(stats, Garbage):
        return Loaded(rounds, garbage, OutboxStats(), stats_read=False)
    return Loaded(rounds, garbage, stats)


class Outbox:
    """The leader's view of `outbox/`: pending rounds oldest first, the counts, and the
    collector's answers still to be removed. Builds the writes; applies them once they
    committed."""

    def __init__(self, layout: Layout, limit: int) -> None:
        self.layout = layout
        self.limit = limit
        self.pending: list[int] = []
        self.stats = OutboxStats()
        self.answered: dict[int, Outcome] = {}

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

    def add_release(self, transaction: Transaction, result: Aggregate | None,
                    opened: int) -> tuple[int | None, OutboxStats]:
        """Queue the round in the release transaction and record the round it opens; when
        full, drop the oldest in the same transaction. Returns the dropped round and the
        counts that hold if it commits."""
        stats = replace(self.stats, released=opened)
        dropped = None
        if result is not None:
            transaction.create(self.layout.outbox_round(result.round), result.encode())
            if len(self.pending) >= self.limit:
                dropped = self.pending[0]
                stats = replace(stats, dropped=stats.dropped + 1)
                transaction.delete(self.layout.outbox_round(dropped))
        transaction.set_data(self.layout.outbox, stats.encode())
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

    def add_cleanup(self, transaction: Transaction
                    ) -> tuple[list[tuple[int, Outcome]], OutboxStats]:
        """Call after forget_answers_for_gone_rounds, in office."""
        batch = sorted(self.answered.items())[:CLEANUP_BATCH]
        stats = self.stats
        for round_number, outcome in batch:
            transaction.delete(self.layout.outbox_round(round_number))
            if outcome == Outcome.REJECTED:
                stats = replace(stats, rejected=stats.rejected + 1)
        transaction.set_data(self.layout.outbox, stats.encode())
        return batch, stats

    def cleaned(self, batch: list[tuple[int, Outcome]], stats: OutboxStats) -> None:
        done = {round_number for round_number, _ in batch}
        for round_number in done:
            self.answered.pop(round_number, None)
        self.pending = [number for number in self.pending if number not in done]
        self.stats = stats

    def answer(self, round_number: int, outcome: Outcome) -> None:
        """The first answer stands: a second is the collector's "duplicate" of a re-send."""
        self.answered.setdefault(round_number, outcome)
