"""When the leader closes rounds: on a fixed grid, round k at t0 + k x period.

Closing "one period after the previous release" stretches every period by the leader's
own work (collection, commit, a slow reply), so a fleet at 1 s drifted to 26-28 rounds in
30 s. Here the close times are fixed in advance: the leader's work happens inside the
period instead of being added to it. The grid is re-anchored only when the leader changes
(a new leader starts its own grid) or the period changes.
"""

import math
from dataclasses import dataclass


@dataclass
class RoundClock:
    """A leader's grid of close times (monotonic), one per office: a new leader starts
    its own, so nothing of a previous office's timing carries over."""

    next_close: float
    period: float

    def due(self, now: float) -> bool:
        return now >= self.next_close

    def advance(self, now: float) -> int:
        """Move to the next slot after a round closed; returns how many slots had to be
        skipped because the leader fell more than a period behind (then it keeps to the
        grid rather than closing rounds back to back, which devices could not fill)."""
        self.next_close += self.period
        if self.next_close > now:
            return 0
        missed = math.floor((now - self.next_close) / self.period) + 1
        self.next_close += missed * self.period
        return missed

    def retime(self, period: float, now: float) -> None:
        """A new period: the next round closes no later than one new period from now, and
        the grid continues from there."""
        self.period = period
        self.next_close = min(self.next_close, now + period)
