"""Delivery of pending rounds to the HTTP collector, in order, off the daemon's loop.

A slow, failing or hanging collector must never hold the barrier, so a courier thread
posts while the loop goes on. The courier always works on the oldest pending round and
moves to the next only once the collector answered: 2xx (delivered) or a 4xx that means
"never" (rejected, dropped and counted). Anything else (no connection, a timeout, 5xx,
401/403/404/408/429, which an operator or time can fix) is retried with exponential
backoff, so a collector that is down for minutes gets every round, in order, when it is
back. Outcomes go back to the loop, which owns the outbox in ZooKeeper.

Before each attempt the courier asks the loop whether this node may deliver now (it
leads and its lease is fresh) and stamps the delivery with the current epoch, so a
deposed, paused or cut-off leader never posts.

Two formats: an api_url whose path ends in `/nuevo` is the seed's API and gets
`GET ?dato=<mean>`; any other URL gets a JSON POST with everything the round knows.
"""

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from .aggregate import Aggregate

log = logging.getLogger("zk_sensor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
IDLE_CHECK = 0.5
FAILURE_LOG_EVERY = 60.0
NEVER_ACCEPTED = frozenset({400, 409, 410, 413, 415, 422})


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def build_request(aggregate: Aggregate, api_url: str, fleet: str, token: str = "") -> HttpRequest:
    """The fleet name (the namespace) lets one collector keep several fleets apart."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if urlsplit(api_url).path.rstrip("/").endswith("/nuevo"):
        return HttpRequest("GET", api_url, params={"dato": repr(aggregate.mean)},
                           headers=headers)
    return HttpRequest("POST", api_url, json={**aggregate.as_dict(), "fleet": fleet},
                       headers=headers)


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "delivered"
    if status in NEVER_ACCEPTED:
        return "rejected"
    return "retry"


class Courier:
    """Sends the pending rounds the loop hands it, oldest first, one at a time."""

    def __init__(
        self, timeout: float, fleet: str, token: str,
        may_deliver: Callable[[], int | None], api_url: Callable[[], str],
        report: Callable[[int, str, str], None],
    ) -> None:
        self.timeout = timeout
        self.fleet = fleet
        self.token = token
        self.may_deliver = may_deliver
        self.api_url = api_url
        self.report = report
        self.pending: dict[int, Aggregate] = {}
        self.changed = threading.Condition()
        self.stopping = False
        self.session = requests.Session()
        self.thread = threading.Thread(target=self._run, name="courier", daemon=True)
        self.failing_since: float | None = None
        self.last_failure_log = 0.0

    def start(self) -> None:
        self.thread.start()

    def replace(self, rounds: list[Aggregate]) -> None:
        with self.changed:
            self.pending = {aggregate.round: aggregate for aggregate in rounds}
            self.changed.notify()

    def add(self, aggregate: Aggregate) -> None:
        with self.changed:
            self.pending[aggregate.round] = aggregate
            self.changed.notify()

    def discard(self, round_number: int) -> None:
        with self.changed:
            self.pending.pop(round_number, None)

    def clear(self) -> None:
        self.replace([])

    def stop(self, timeout: float) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify()
        self.thread.join(timeout)

    def _next(self) -> Aggregate | None:
        with self.changed:
            if not self.pending and not self.stopping:
                self.changed.wait(IDLE_CHECK)
            if self.stopping or not self.pending:
                return None
            return self.pending[min(self.pending)]

    def _pause(self, seconds: float) -> None:
        """A real pause: new rounds arriving must not cut a backoff short."""
        deadline = time.monotonic() + seconds
        with self.changed:
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                self.changed.wait(left)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self.stopping:
            head = self._next()
            if head is None:
                continue
            epoch = self.may_deliver()
            if epoch is None:
                self._pause(IDLE_CHECK)
                continue
            outcome, detail = self.send(dataclasses.replace(head, epoch=epoch))
            if outcome == "retry":
                self.note_failure(head.round, detail, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.note_recovery()
            self.discard(head.round)
            self.report(head.round, outcome, detail)

    def send(self, aggregate: Aggregate) -> tuple[str, str]:
        api_url = self.api_url()
        request = build_request(aggregate, api_url, self.fleet, self.token)
        try:
            response = self.session.request(
                request.method, request.url, params=request.params, json=request.json,
                headers=request.headers, timeout=self.timeout,
            )
        except requests.RequestException as error:
            return "retry", one_line(error)
        reason = " ".join(response.text.split())[:200]
        return classify(response.status_code), f"HTTP {response.status_code} {reason}".strip()

    def note_failure(self, round_number: int, detail: str, backoff: float) -> None:
        """One line when the collector starts failing, then one a minute: not one per try."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.last_failure_log < FAILURE_LOG_EVERY:
            return
        self.last_failure_log = now
        log.error("delivery of round %d failed: %s; %d rounds pending, retrying with backoff "
                  "(now %.1f s)", round_number, detail, len(self.pending), backoff)

    def note_recovery(self) -> None:
        if self.failing_since is not None:
            log.warning("collector reachable again after %.0f s; delivering %d pending rounds",
                        time.monotonic() - self.failing_since, len(self.pending))
            self.failing_since = None


def one_line(error: Exception) -> str:
    """requests' messages nest three exceptions deep; the operator wants the last reason."""
    text = " ".join(str(error).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return f"{type(error).__name__}: {errno.group(1).strip()}"
    return text
