"""The fault matrix's timing and its check (issue 5): what the collector kept after a
fault, checked by `check_rounds`:

(a) no round number missing between the first and the last stored round,
(b) none stored twice,
(c) epochs never go down as round numbers go up (fencing),
(d) the largest gap in arrival time between consecutive rounds stays below a bound stated
    per fault (the constants below, each with its reasoning).

Used by tests/test_faults.py (one fault per test), tests/test_lab.py (the lab's faults)
and the nemesis (nemesis.py).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zk_sensor.testing.collector import fetch_rounds
from zk_sensor.testing.fleet import Fleet, wait_for

# The loopback fleet (fleet.py's Fleet): sampling period, session timeout, delivery timeout.
PERIOD_S = Fleet.period
SESSION_TIMEOUT_S = Fleet.session_timeout
HTTP_TIMEOUT_S = 1.0
# The courier's first and longest waits between two attempts (zk_sensor.node.delivery's
# BACKOFF_FIRST and BACKOFF_MAX; the wait doubles after each failed attempt).
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
# Scheduling noise on a loaded 2-core machine running three JVMs and a fleet.
SLACK_S = 2.0
# A JVM stopped and started again, and its quorum elected, on that machine.
ZK_RESTART_S = 10.0

# Full rounds stored before any fault is injected.
STEADY_ROUNDS = 4
# After recovery, wait for this many rounds beyond the fleet's round at that moment.
CATCH_UP_ROUNDS = 3
CATCH_UP_TIMEOUT_S = 60.0

# --- bounds on the largest gap between the arrivals of consecutive rounds
# (the faults on the fleet's leader and on one ZooKeeper server; tests/test_faults.py
# has those that depend on its own deliberate outages)
# SIGTERM: the leader deletes its candidate znode, the next node takes office within
# milliseconds and closes the open round one period after its release: a few periods.
SIGTERM_GAP_S = 3 * PERIOD_S + SLACK_S
# SIGKILL: nobody notices until the dead leader's session expires, then as SIGTERM.
SIGKILL_GAP_S = SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# SIGSTOP longer than the session timeout: as SIGKILL for the fleet (the paused leader's
# lease lapses at once and its session expires after one session timeout).
SIGSTOP_GAP_S = SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# The ensemble's leader server stopped: every client is dropped while the two others
# elect a leader (seconds on loopback); sessions survive (reconnect within the session
# timeout), the fleet's leader steps down on suspension and takes office again.
ZK_LEADER_GAP_S = SESSION_TIMEOUT_S + ZK_RESTART_S / 2 + 2 * PERIOD_S + SLACK_S
# One follower stopped: only its clients move to another server, within the session.
ZK_FOLLOWER_GAP_S = SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S


@dataclass(frozen=True)
class RoundsRecord:
    """What the collector kept for one fault, and the figures for the fault
    matrix (docs/explanation/reliability.md)."""

    fault: str
    first: int
    last: int
    lost: list[int]
    duplicated: list[int]
    epoch_regressions: list[str]
    max_gap: float
    max_gap_after: int
    bound: float
    epochs: tuple[int, int]
    replies: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        replies = ", ".join(f"{k} {v}" for k, v in sorted(self.replies.items()) if v)
        return (f"FAULT {self.fault}: rounds {self.first}..{self.last}, lost {len(self.lost)}, "
                f"duplicated {len(self.duplicated)}, max gap {self.max_gap:.1f} s "
                f"(after round {self.max_gap_after}; bound {self.bound:.0f} s), "
                f"epochs {self.epochs[0]}..{self.epochs[1]}"
                + (f"; collector replies: {replies}" if replies else ""))


def check_rounds(fault: str, rows: list[dict[str, Any]], gap_bound: float,
                 since_round: int | None = None,
                 replies: dict[str, int] | None = None) -> RoundsRecord:
    """Check (a)-(d) on the collector's rows (from `fetch_rounds`), print the figures, and
    return them. `since_round` ignores older rounds (a collector with a longer history)."""
    kept = sorted((r for r in rows if r.get("round") is not None
                   and (since_round is None or r["round"] >= since_round)),
                  key=lambda r: (r["round"], r["received_at"]))
    assert len(kept) >= 2, f"{fault}: too few rounds stored to check: {kept}"
    numbers = [r["round"] for r in kept]
    first, last = numbers[0], numbers[-1]
    duplicated = sorted(n for n, times in Counter(numbers).items() if times > 1)
    lost = sorted(set(range(first, last + 1)) - set(numbers))
    regressions, highest = [], kept[0]
    for row in kept:
        if row["epoch"] < highest["epoch"]:
            regressions.append(f"round {row['round']} has epoch {row['epoch']} after round "
                               f"{highest['round']} with epoch {highest['epoch']}")
        if row["epoch"] > highest["epoch"]:
            highest = row
    gaps = [(later["received_at"] - earlier["received_at"], earlier["round"])
            for earlier, later in itertools.pairwise(kept)]
    max_gap, max_gap_after = max(gaps)
    record = RoundsRecord(fault, first, last, lost, duplicated, regressions, max_gap,
                          max_gap_after, gap_bound,
                          (min(r["epoch"] for r in kept), max(r["epoch"] for r in kept)),
                          dict(replies or {}))
    print(f"\n{record.line()}")
    assert not lost, f"{fault}: rounds lost: {lost}"
    assert not duplicated, f"{fault}: rounds stored twice: {duplicated}"
    assert not regressions, f"{fault}: epochs went down: {regressions}"
    assert max_gap < gap_bound, (
        f"{fault}: {max_gap:.1f} s between rounds {max_gap_after} and the next "
        f"(bound {gap_bound:.1f} s)")
    return record


def assert_fenced(rows: list[dict[str, Any]], node: str, old_epoch: int, since: float) -> None:
    """Every round stored after `since` that names `node` as its leader carries an epoch
    newer than `old_epoch`: the node delivered nothing with the epoch it held before."""
    stale = [r for r in rows if r["received_at"] > since and r.get("leader") == node
             and r["epoch"] <= old_epoch]
    assert not stale, f"node {node} delivered with its old epoch {old_epoch}: {stale}"


def newest_round(rows: list[dict[str, Any]]) -> int:
    return max((r["round"] for r in rows if r.get("round") is not None), default=-1)


def wait_caught_up(base_url: str, target: int, timeout: float = CATCH_UP_TIMEOUT_S
                   ) -> list[dict[str, Any]]:
    """Wait until the collector holds a round numbered `target` or above; its rows."""
    def caught_up() -> list[dict[str, Any]] | None:
        rows = fetch_rounds(base_url)
        return rows if newest_round(rows) >= target else None

    return wait_for(caught_up, timeout, f"the collector to hold round {target}", interval=0.5)


def wait_full_rounds(base_url: str, count: int, devices: int, after: float = 0.0,
                     timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until `count` rounds over `devices` devices arrived after `after`."""
    def enough() -> list[dict[str, Any]] | None:
        full = [r for r in fetch_rounds(base_url)
                if r["count"] == devices and r["received_at"] > after]
        return full if len(full) >= count else None

    return wait_for(enough, timeout, f"{count} rounds over {devices} devices", interval=0.25)


__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "CATCH_UP_ROUNDS",
    "CATCH_UP_TIMEOUT_S",
    "HTTP_TIMEOUT_S",
    "PERIOD_S",
    "SESSION_TIMEOUT_S",
    "SIGKILL_GAP_S",
    "SIGSTOP_GAP_S",
    "SIGTERM_GAP_S",
    "SLACK_S",
    "STEADY_ROUNDS",
    "ZK_FOLLOWER_GAP_S",
    "ZK_LEADER_GAP_S",
    "ZK_RESTART_S",
    "RoundsRecord",
    "assert_fenced",
    "check_rounds",
    "newest_round",
    "wait_caught_up",
    "wait_full_rounds",
]
