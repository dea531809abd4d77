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

HTTP goes through the standard library's http.client on one keep-alive connection:
requests (with urllib3, idna, charset_normalizer) would add 5.5 MB to a leader's 29 MB
for one request per period. http.client follows no redirect, and none is followed here:
a 3xx is retried like any answer an operator must fix, since following it would carry the
round and the token wherever the answer points.

An https:// collector must prove its name (certificate chain and host name) against
collector_ca_file, else zk_ca_file (a deployment's one CA usually signs both), else the
system's CAs. A failed verification, or a CA file that cannot be loaded, is a retried
failure whose line names the URL and the reason, so fixing either side heals delivery.

The live api_url is ZooKeeper's, writable by whoever may write the config, so it must not
decide where the write token goes: the token goes only to the origin of the node's own
settings' api_url or one of api_token_origins. With a token and a live api_url elsewhere,
nothing is sent at all: the courier answers "retry", so the rounds stay pending (neither
dropped nor delivered) until an operator fixes the URL or extends api_token_origins, and
it says so once per refused URL, not once per attempt. Without a token there is nothing to
protect and any api_url is used.

Two formats: an api_url whose path ends in `/nuevo` is the seed's API and gets
`GET ?dato=<mean>`, plus the round's key as extra parameters (`round`, `epoch`, `fleet`,
`incarnation`) that the seed's own API ignores and zk-collector de-duplicates on; any
other URL gets a JSON POST with everything the round knows. Either way a delivery's key
is (fleet, incarnation, round): re-sending a round after a lost answer is harmless.
"""

import dataclasses
import http.client
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from .aggregate import Aggregate
from .settings import Settings
from .validation import origin_of, parse_origins

log = logging.getLogger("zk_sensor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
IDLE_CHECK = 0.5
FAILURE_LOG_EVERY = 60.0
NEVER_ACCEPTED = frozenset({400, 410, 413, 415, 422})
FENCED = 409


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
        params = {"dato": repr(aggregate.mean), "round": str(aggregate.round),
                  "epoch": str(aggregate.epoch), "fleet": fleet}
        if aggregate.incarnation:
            params["incarnation"] = aggregate.incarnation
        return HttpRequest("GET", api_url, params=params, headers=headers)
    body: dict[str, Any] = {**aggregate.as_dict(), "fleet": fleet}
    if not aggregate.incarnation:
        del body["incarnation"]
    return HttpRequest("POST", api_url, json=body, headers=headers)


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "delivered"
    if status == FENCED:
        return "fenced"
    if status in NEVER_ACCEPTED:
        return "rejected"
    return "retry"


# The errors of one HTTP attempt: no connection, a timeout, a broken or garbled answer.
HTTP_ERRORS = (OSError, http.client.HTTPException)
# A kept-alive connection the server closed meanwhile fails like this before any answer:
# the request never reached the collector, so it is resent at once on a new connection.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
REPLY_LIMIT = 4096


class CaFileError(Exception):
    """The CA file for an https:// collector cannot be loaded; one line naming it."""


class HttpSender:
    """One keep-alive connection to the collector's origin, opened on first use and
    replaced when the URL's origin changes or an attempt fails."""

    def __init__(self, timeout: float, ca_file: str) -> None:
        self.timeout = timeout
        self.ca_file = ca_file
        self.tls: ssl.SSLContext | None = None
        self.connection: http.client.HTTPConnection | None = None
        self.origin: tuple[str, str, int | None] | None = None

    @property
    def trust(self) -> str:
        return f"CA file {self.ca_file}" if self.ca_file else "the system's CAs"

    def send(self, request: HttpRequest) -> tuple[int, str]:
        """The status and the start of the body; raises one of HTTP_ERRORS."""
        parts = urlsplit(request.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if request.params:
            target += ("&" if "?" in target else "?") + urlencode(request.params)
        headers = dict(request.headers)
        body = None
        if request.json is not None:
            body = json.dumps(request.json).encode()
            headers["Content-Type"] = "application/json"
        reused = self._connect(parts.scheme, parts.hostname or "", parts.port)
        try:
            return self._exchange(request.method, target, body, headers)
        except STALE_CONNECTION:
            self.close()
            if not reused:
                raise
        self._connect(parts.scheme, parts.hostname or "", parts.port)
        return self._exchange(request.method, target, body, headers)

    def _connect(self, scheme: str, host: str, port: int | None) -> bool:
        """True when an open connection is reused."""
        if self.connection is not None and self.origin == (scheme, host, port):
            return True
        self.close()
        if scheme == "https":
            self.connection = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                          context=self._tls_context())
        else:
            self.connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        self.origin = (scheme, host, port)
        return False

    def _tls_context(self) -> ssl.SSLContext:
        """Loaded at the first https:// connection rather than at start, so a broken CA
        file is a retried failure that heals when the file is fixed, and a fleet that
        delivers over http:// never needs one."""
        if self.tls is None:
            try:
                self.tls = ssl.create_default_context(cafile=self.ca_file or None)
            except OSError as error:
                raise CaFileError(f"cannot load CA file {self.ca_file}: "
                                  f"{tls_reason(error)}") from None
        return self.tls

    def _exchange(self, method: str, target: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, str]:
        assert self.connection is not None
        try:
            self.connection.request(method, target, body=body, headers=headers)
            response = self.connection.getresponse()
            text = response.read(REPLY_LIMIT).decode(errors="replace")
            if not response.isclosed():
                response.read()
        except HTTP_ERRORS:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, text

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None


class Courier:
    """Sends the pending rounds the loop hands it, oldest first, one at a time.

    Only a leader delivers, so the thread starts the first time a round is handed over;
    a follower never runs it.
    """

    def __init__(
        self, timeout: float, fleet: str, token: str, node_id: str,
        may_deliver: Callable[[], int | None], api_url: Callable[[], str],
        report: Callable[[int, str, str], None], *, token_origins: tuple[str, ...],
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
        self.holding: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, may_deliver: Callable[[], int | None],
        api_url: Callable[[], str], report: Callable[[int, str, str], None],
    ) -> Self:
        """The token's origins come from local settings only, never from ZooKeeper."""
        origins = (origin_of(settings.api_url), *parse_origins(settings.api_token_origins))
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
            if outcome == "retry":
                if self.holding is None:
                    self.note_failure(head.round, detail, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.note_recovery()
            if outcome == "fenced":
                self.report(head.round, outcome, detail)
                self._pause(IDLE_CHECK)
                continue
            self.discard(head.round)
            self.report(head.round, outcome, detail)

    def send(self, aggregate: Aggregate) -> tuple[str, str]:
        url = self.api_url()
        if self.token and origin_of(url) not in self.token_origins:
            return "retry", self.hold(url)
        self.holding = None
        request = build_request(aggregate, url, self.fleet, self.token)
        try:
            status, text = self.sender.send(request)
        except (*HTTP_ERRORS, CaFileError) as error:
            return "retry", failure_detail(error, url, self.sender.trust)
        reason = " ".join(text.split())[:200]
        return classify(status), f"HTTP {status} {reason}".strip()

    def hold(self, url: str) -> str:
        """Logged when a refused URL first appears, not at every attempt: the fix is an
        operator's, and the rounds wait for it in the outbox."""
        detail = (f"api_url {url} is outside the write token's origins "
                  f"({', '.join(self.token_origins)}); holding rounds until an operator "
                  "fixes it or adds it to api_token_origins")
        if url != self.holding:
            log.error("%s", detail)
            self.holding = url
        return detail

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


def tls_reason(error: OSError) -> str:
    """OpenSSL's words without its bracketed code and C source position."""
    text = " ".join(str(error).split())
    return re.sub(r"^\[[^]]*\] *| *\(_ssl\.c:\d+\)$", "", text) or type(error).__name__


def one_line(error: Exception) -> str:
    """An exception's message on one line; an OS error as its type and reason alone."""
    text = " ".join(str(error).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return f"{type(error).__name__}: {errno.group(1).strip()}"
    return text
