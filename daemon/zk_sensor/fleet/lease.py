"""The leader's lease: how long after its last round trip to the quorum a leader may act.

ZooKeeper tells a cut-off leader nothing until it reconnects, while the server may expire
its session after the session timeout and let another node take office. So a leader acts
only within half of the session timeout after a round trip it sent (not received: the
reply may have been slow), and renews long before that with a read the quorum stands
behind. The length comes from the timeout the server negotiated, which it clamps to 2-20
tickTimes, never from the one the node asked for.
"""

from dataclasses import dataclass


@dataclass
class Lease:
    """How long a leader may still act without hearing from the quorum: `length` (half the
    negotiated session timeout) from the last round trip it sent (`since`)."""

    length: float = 0.0
    since: float = 0.0

    def set_session_timeout(self, negotiated: float) -> None:
        self.length = negotiated / 2

    def renew(self, sent_at: float) -> None:
        self.since = max(self.since, sent_at)

    def fresh(self, now: float) -> bool:
        return now - self.since < self.length

    @property
    def renew_at(self) -> float:
        """A third of the way in: two more tries before the lease lapses."""
        return self.since + self.length / 3

    def end(self) -> None:
        self.since = 0.0


def timing_problem(negotiated: float, zk_deadline: float, http_timeout: float) -> str | None:
    """Why the negotiated session timeout cannot carry the node's budgets, or None.

    A call must give up within a third of the session, so two more fit before the server
    expires it; a delivery must end within the lease, or a deposed leader could still be
    posting when the next one starts."""
    if zk_deadline > negotiated / 3:
        return (f"the server negotiated a session timeout of {negotiated:.1f} s: zk_deadline "
                f"{zk_deadline:g} s must be at most a third of it")
    if http_timeout >= negotiated / 2:
        return (f"the server negotiated a session timeout of {negotiated:.1f} s: http_timeout "
                f"{http_timeout:g} s must be under half of it (the leader's lease)")
    return None
