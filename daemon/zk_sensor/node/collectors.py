"""Which of api_url's collectors a round goes to: pure logic, no I/O (the courier sends).

Collectors that share one store (PostgreSQL) are interchangeable, so a node sticks to the
one that answered last and moves on only when it fails in a way that says the round was
not refused: no connection, a timeout, a broken answer, a 5xx or a 429. Then the same
round goes at once to the next URL of the list, so a dead collector costs one failed
attempt when the node switches, not a retry delay per round. Its answer cannot be lost in
between: a round is keyed (fleet, incarnation, round), so one that did land at the first
collector is a duplicate at the second. Any other answer (2xx, the 409 fence, a 4xx) is
that collector's verdict on the round and stands: the next collector would share its
store, its fence and its token check.

A collector that failed rests for REST seconds: it is tried after the others, so a round
does not pay for its timeout again while another answers, and still before giving up.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

REST = 30.0
TRY_ELSEWHERE_STATUSES = frozenset({429})


def try_elsewhere(status: int) -> bool:
    """An answer that says the round was not stored and another collector may store it."""
    return status >= 500 or status in TRY_ELSEWHERE_STATUSES


@dataclass
class Collectors:
    """The node's memory of its collectors between rounds (kept by the courier's thread)."""

    clock: Callable[[], float] = time.monotonic
    rest: float = REST
    current: str | None = None
    failures: dict[str, str] = field(default_factory=dict)
    resting_until: dict[str, float] = field(default_factory=dict)

    def order(self, urls: tuple[str, ...]) -> list[str]:
        """The current collector first, then the list from there on, round to its start;
        resting collectors after the others, the one that failed longest ago first."""
        start = urls.index(self.current) if self.current in urls else 0
        cycle = [*urls[start:], *urls[:start]]
        now = self.clock()
        awake = [url for url in cycle if self.resting_until.get(url, 0.0) <= now]
        resting = sorted((url for url in cycle if url not in awake),
                         key=lambda url: self.resting_until[url])
        return awake + resting

    def failed(self, url: str, detail: str) -> None:
        self.failures[url] = detail
        self.resting_until[url] = self.clock() + self.rest

    def answered(self, url: str) -> str | None:
        """The line to log when the node moves to another collector, else None."""
        previous, self.current = self.current, url
        self.resting_until.pop(url, None)
        self.failures.pop(url, None)
        if previous is None or previous == url:
            return None
        why = self.failures.get(previous)
        return f"delivering to {url} ({previous} {f'failed: {why}' if why else 'left api_url'})"
