"""Delivery of pending rounds to the HTTP collector, in order, off the daemon's loop.

A slow, failing or hanging collector must never hold the barrier, so a courier thread
posts while the loop goes on. The courier always works on the oldest pending round and
moves to the next only once the collector answered: 2xx (delivered) or a 4xx that means
"never" (rejected, dropped and counted). A 409 is the collector's epoch fence: it has
accepted a newer leader of this fleet, so this node's leadership is in doubt; the round is
kept and the loop steps down and re-checks, it is never a reason to drop a round.
Anything else (no connection, a timeout, 5xx, 401/403/404/408/429, which an operator or
time can fix) is retried with exponential backoff, so a collector that is down for
minutes gets every round, in order, when it is back. Outcomes go back to the loop, which
owns the outbox in ZooKeeper.

Before each attempt the courier asks the loop whether this node may deliver now (it
leads and its lease is fresh) and stamps the delivery with the current epoch and this
node as its leader, so a deposed, paused or cut-off leader never posts, and an epoch
names one leader at the collector even for rounds inherited from a dead one.

HTTP goes through sender.py: a requests.Session with one keep-alive connection per
collector, imported at the first delivery so that a follower never loads it. No redirect
is followed: a 3xx is retried like any answer an operator must fix, since following it
would carry the round and the token wherever the answer points.

An https:// collector must prove its name (certificate chain and host name) against
collector_ca_file, else zk_ca_file (a deployment's one CA usually signs both), else the
system's CAs. A failed verification, or a CA file that cannot be loaded, is a retried
failure whose line names the URL and the reason, so fixing either side heals delivery.

api_url may list several collectors that share one store: collectors.py picks which one
a round goes to, and a failure that says nothing was stored moves the same round at once
to the next one. Each attempt after the first asks the loop again whether this node may
deliver, so a failover never stretches one attempt's time past the leader's lease.

The live api_url is ZooKeeper's, writable by whoever may write the config, so it must not
decide where the write token goes: the token goes only to the origins of the node's own
settings' api_url (every URL of its list) or one of api_token_origins. With a token, a
live URL elsewhere gets no request at all; when none is left, the courier answers
"retry", so the rounds stay pending (neither dropped nor delivered) until an operator
fixes the URL or extends api_token_origins, and it says so once per refused value, not
once per attempt. Without a token there is nothing to protect and any api_url is used.

Two formats: an api_url whose path ends in `/nuevo` is the seed's API and gets
`GET ?dato=<mean>`, plus the round's key as extra parameters (`round`, `epoch`, `fleet`,
`incarnation`) that the seed's own API ignores and zk-collector de-duplicates on; any
other URL gets a JSON POST with everything the round knows. Either way a delivery's key
is (fleet, incarnation, round): re-sending a round after a lost answer is harmless.
"""

import dataclasses
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlsplit

from zk_sensor.fleet.aggregate import Aggregate
from zk_sensor.fleet.outbox import Outcome
from zk_sensor.fleet.validation import api_urls, origin_of, parse_origins
from zk_sensor.node.collectors import Collectors, try_elsewhere
from zk_sensor.node.sender import HTTP_ERRORS, CaFileError, HttpRequest, HttpSender, tls_reason
from zk_sensor.node.settings import Settings

log = logging.getLogger("zk_sensor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
IDLE_CHECK = 0.5
FAILURE_LOG_EVERY = 60.0
NEVER_ACCEPTED = frozenset({400, 410, 413, 415, 422})
FENCED = 409
HOLDING = "; holding rounds until an operator fixes it or adds it to api_token_origins"


def build_request(aggregate: Aggregate, api_url: str, fleet: str, token: str = "") -> HttpRequest:
    """The fleet name (the namespace) lets one collector keep several fleets apart."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if urlsplit(api_url).path.rstrip("/").endswith("/nuevo"):
        params = {"dato": repr(aggregate.mean), "round": str(aggregate.round),
                  "epoch": str(aggregate.epoch), "fleet": fleet}
        if aggregate.incarnation:
            params["incarnation"] = aggregate.incarnation
        return HttpRequest("GET", api_url, params=params, headers=headers)
    body: dict[str, Any] = {**aggregate.as_dict(), "fleet": fleet}
    if not aggregate.incarnation:
        del body["incarnation"]
    return HttpRequest("POST", api_url, json=body, headers=headers)


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == FENCED:
        return Outcome.FENCED
    if status in NEVER_ACCEPTED:
        return Outcome.REJECTED
    return Outcome.RETRY


class Courier:
    """Sends the pending rounds the loop hands it, oldest first, one at a time.

    Only a leader delivers, so the thread starts the first time a round is handed over;
    a follower never runs it.
    """

    def __init__(
        self, timeout: float, fleet: str, token: str, node_id: str,
        may_deliver: Callable[[], int | None], api_url: Callable[[], str],
        report: Callable[[int, Outcome, str], None], *, token_origins: tuple[str, ...],
        ca_file: str,
    ) -> None:
        self.timeout = timeout
        self.fleet = fleet
        self.token = token
        self.token_origins = token_origins
        self.node_id = node_id
        self.may_deliver = may_deliver
        self.api_url = api_url
        self.report = report
        self.pending: dict[int, Aggregate] = {}
        self.changed = threading.Condition()
        self.stopping = False
        self.sender = HttpSender(timeout, ca_file)
        self.thread: threading.Thread | None = None
        self.failing_since: float | None = None
        self.last_failure_log = 0.0
        self.holding = False
        self.refused: tuple[str, ...] = ()
        self.collectors = Collectors()

    @classmethod
    def from_settings(
        cls, settings: Settings, may_deliver: Callable[[], int | None],
        api_url: Callable[[], str], report: Callable[[int, Outcome, str], None],
    ) -> Self:
        """The token's origins come from local settings only, never from ZooKeeper."""
        origins = (*(origin_of(url) for url in api_urls(settings.api_url)),
                   *parse_origins(settings.api_token_origins))
        return cls(settings.http_timeout, settings.namespace, settings.api_token,
                   settings.node_id, may_deliver, api_url, report, token_origins=origins,
                   ca_file=settings.collector_ca_file or settings.zk_ca_file)

    def _start_once(self) -> None:
        if self.thread is None and not self.stopping:
            self.thread = threading.Thread(target=self._run, name="courier", daemon=True)
            self.thread.start()

    def replace(self, rounds: list[Aggregate]) -> None:
        with self.changed:
            self.pending = {aggregate.round: aggregate for aggregate in rounds}
            self.changed.notify()
        if rounds:
            self._start_once()

    def add(self, aggregate: Aggregate) -> None:
        with self.changed:
            self.pending[aggregate.round] = aggregate
            self.changed.notify()
        self._start_once()

    def discard(self, round_number: int) -> None:
        with self.changed:
            self.pending.pop(round_number, None)

    def clear(self) -> None:
        self.replace([])

    def follow_http_timeout(self, http_timeout: float) -> None:
        """The deadline was fitted to the session the server granted: the next request
        waits that long at most."""
        self.sender.timeout = http_timeout

    def stop(self, timeout: float) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify()
        if self.thread is not None:
            self.thread.join(timeout)

    def _next(self) -> Aggregate | None:
        with self.changed:
            while not self.pending and not self.stopping:
                self.changed.wait()
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
            outcome, detail = self.send(dataclasses.replace(head, epoch=epoch, leader=self.node_id))
            if outcome == Outcome.RETRY:
                if not self.holding:
                    self.note_failure(head.round, detail, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.note_recovery()
            if outcome == Outcome.FENCED:
                self.report(head.round, outcome, detail)
                self._pause(IDLE_CHECK)
                continue
            self.discard(head.round)
            self.report(head.round, outcome, detail)

    def send(self, aggregate: Aggregate) -> tuple[Outcome, str]:
        """The verdict of the first listed collector that gives one (collectors.py)."""
        urls = self.permitted(api_urls(self.api_url()))
        self.holding = not urls
        if not urls:
            return Outcome.RETRY, self.refusal(self.refused) + HOLDING
        failures: list[str] = []
        for url in self.collectors.order(urls):
            if failures and (self.stopping or self.may_deliver() != aggregate.epoch):
                break
            outcome, detail, elsewhere = self.attempt(aggregate, url)
            if not elsewhere:
                if switched := self.collectors.answered(url):
                    log.warning("%s", switched)
                return outcome, detail
            self.collectors.failed(url, detail)
            failures.append(f"{url}: {detail}" if len(urls) > 1 else detail)
        return Outcome.RETRY, "; ".join(failures)

    def attempt(self, aggregate: Aggregate, url: str) -> tuple[Outcome, str, bool]:
        """The outcome, its line, and whether another collector may take the round."""
        request = build_request(aggregate, url, self.fleet, self.token)
        try:
            status, text = self.sender.send(request)
        except (*HTTP_ERRORS, CaFileError) as error:
            return Outcome.RETRY, failure_detail(error, url, self.sender.trust), True
        reason = " ".join(text.split())[:200]
        return classify(status), f"HTTP {status} {reason}".strip(), try_elsewhere(status)

    def permitted(self, urls: tuple[str, ...]) -> tuple[str, ...]:
        """With a token, only the URLs at its origins. The others are named when they
        first appear, not at every attempt: the fix is an operator's."""
        if not self.token:
            return urls
        allowed = tuple(url for url in urls if origin_of(url) in self.token_origins)
        refused = tuple(url for url in urls if url not in allowed)
        if refused != self.refused:
            self.refused = refused
            if refused:
                rest = f"; delivering to {', '.join(allowed)} only" if allowed else HOLDING
                log.error("%s%s", self.refusal(refused), rest)
        return allowed

    def refusal(self, urls: tuple[str, ...]) -> str:
        return (f"api_url {', '.join(urls)} is outside the write token's origins "
                f"({', '.join(self.token_origins)})")

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


def failure_detail(error: Exception, url: str, trust: str) -> str:
    """One line for a failed attempt. TLS failures name the URL and what was trusted,
    since the fix may be on either side: the collector's certificate or this node's CA."""
    if isinstance(error, CaFileError):
        return str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"{url}: certificate not trusted ({error.verify_message}), checked against {trust}"
    if isinstance(error, ssl.SSLError):
        return f"{url}: TLS failed: {tls_reason(error)}"
    reason = one_line(error)
    named = reason.startswith(type(error).__name__)
    return reason if named else f"{type(error).__name__}: {reason}".strip(": ")


def one_line(error: Exception) -> str:
    """An exception's message on one line; an OS error as its type and reason alone."""
    text = " ".join(str(error).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return f"{type(error).__name__}: {errno.group(1).strip()}"
    return text
