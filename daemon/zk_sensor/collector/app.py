"""The collector's HTTP interface as a plain WSGI application.

Writes: the seed's `GET /nuevo?dato=<mean>` and the daemon's `POST /api/rounds` (JSON).
A write keyed by (fleet, incarnation, round) is stored once however often it is sent; the
seed's endpoint is keyed only when it is given `round` (and `epoch`), as newer daemons do.
Who may write is auth.py's; with a fence (fence.py) a keyed round must also be one the
fleet's leader, as ZooKeeper knows it, may deliver.
Reads: `/` (the page), `/api/rounds`, `/api/series`, `/api/summary`, `/healthz`,
`/metrics`; none of them reads more rows as history grows.
Every refusal is a 4xx with a one-line JSON `error`, and stores nothing.
"""

import json
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import parse_qs

from prometheus_client import generate_latest

from zk_sensor.collector.auth import ANONYMOUS, SHARED, Gate
from zk_sensor.collector.backend import RoundStore, StoreUnavailable
from zk_sensor.collector.metrics import collector_registry
from zk_sensor.collector.page import CONTENT_SECURITY_POLICY, render_page
from zk_sensor.collector.parse import (
    MAX_BODY,
    Refused,
    content_length,
    fleet_param,
    read_json_body,
    round_from_json,
    round_from_query,
    whole_param,
)
from zk_sensor.collector.series import RANGES
from zk_sensor.collector.store import Outcome, Round
from zk_sensor.config.serving import PROMETHEUS_CONTENT_TYPE

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse

MAX_LIMIT = 1000
# On every answer: no MIME sniffing, no Referer leaving the page, no framing.
SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                    ("X-Frame-Options", "DENY")]
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = ("Strict-Transport-Security", "max-age=31536000")
# A browser marks every request it sends; the seed's clients and the daemon send none.
BROWSER_SITES_ALLOWED = {"", "same-origin", "none"}


class Fence(Protocol):
    """What the application asks of a fence: ZkFence, or a test's stand-in."""
    def check(self, item: Round, who: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Reply:
    """An answer before it is written, so every route's answer gets the same headers
    (the security headers, the CSP) in one place."""
    status: str
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(status: str, payload: object) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


class Collector:
    """The collector's HTTP interface as one WSGI application, so the server (cheroot)
    and the tests drive exactly the same code."""
    def __init__(self, store: RoundStore, token: str | None = None, *,
                 gate: Gate | None = None, fleets: frozenset[str] = frozenset(),
                 fence: Fence | None = None) -> None:
        self.store = store
        self.gate = gate or Gate({SHARED: token} if token else {})
        self.fleets = fleets
        self.fence = fence
        self.hostname = socket.gethostname()
        self.outcomes: Counter[str] = Counter()
        self.forbidden: Counter[str] = Counter()
        self.registry = collector_registry(self.outcomes, self.gate.unauthorized,
                                           self.forbidden, store)
        self.routes: dict[tuple[str, str], Callable[[dict[str, Any]], Reply]] = {
            ("GET", "/"): self.page,
            ("GET", "/nuevo"): self.seed_delivery,
            ("POST", "/api/rounds"): self.json_delivery,
            ("GET", "/api/rounds"): self.list_rounds,
            ("GET", "/api/series"): self.series,
            ("GET", "/api/summary"): self.summary,
            ("GET", "/healthz"): self.health,
            ("GET", "/metrics"): self.metrics,
        }

    def __call__(self, environ: dict[str, Any], start_response: "StartResponse"
                 ) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        handler = self.routes.get((method, path))
        try:
            if content_length(environ, required=False) > MAX_BODY:
                raise Refused("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
            if handler is None:
                known = {m for (m, p) in self.routes if p == path}
                if known:
                    raise Refused("405 Method Not Allowed", f"{method} not allowed on {path}",
                                  [("Allow", ", ".join(sorted(known)))])
                raise Refused("404 Not Found", f"no such path {path}")
            reply = handler(environ)
        except Refused as refusal:
            if handler in (self.seed_delivery, self.json_delivery):
                self.outcomes["unauthorized" if refusal.status.startswith("401")
                              else "refused"] += 1
            reply = json_reply(refusal.status, {"error": refusal.reason})
            reply.headers = refusal.headers
        except StoreUnavailable as error:
            reply = json_reply("503 Service Unavailable", {"error": str(error)})
            reply.headers = [("Retry-After", "1")]
        start_response(reply.status, [("Content-Type", reply.content_type),
                                      ("Content-Length", str(len(reply.body))),
                                      ("Cache-Control", "no-store"), *SECURITY_HEADERS,
                                      *self.policy(reply, environ), *reply.headers])
        return [reply.body]

    @staticmethod
    def policy(reply: Reply, environ: dict[str, Any]) -> list[tuple[str, str]]:
        page = reply.content_type.startswith("text/html")
        headers = [("Content-Security-Policy", CONTENT_SECURITY_POLICY if page else API_POLICY)]
        return headers + ([HSTS] if environ.get("wsgi.url_scheme") == "https" else [])

    def refuse(self, environ: dict[str, Any], who: str, reason: str, line: str) -> NoReturn:
        self.forbidden[reason] += 1
        source = environ.get("REMOTE_ADDR", "?")
        self.gate.refusals.note(source, f"403 to {source} ({who}): {line}")
        raise Refused("403 Forbidden", line)

    def sender(self, environ: dict[str, Any], keyed: bool) -> str:
        """Who the write is from; a browser's cross-site request never writes, even on
        the loopback demo where writes are open."""
        site = environ.get("HTTP_SEC_FETCH_SITE", "").lower()
        if site not in BROWSER_SITES_ALLOWED:
            self.refuse(environ, ANONYMOUS, "cross_site", f"a {site} browser request "
                        "cannot write")
        try:
            return self.gate.who(environ, keyed)
        except Refused as refusal:
            if refusal.status.startswith("403"):
                self.refuse(environ, ANONYMOUS, "anonymous_get", refusal.reason)
            raise

    def admit(self, environ: dict[str, Any], item: Round, who: str) -> None:
        """The checks that need the round: its fleet, its leader, and the fence."""
        seed_round = item.fleet is None and item.round is None and self.gate.seed_get_writes
        if self.fleets and item.fleet not in self.fleets and not seed_round:
            self.refuse(environ, who, "fleet", f"fleet {item.fleet!r} is not one this "
                        "collector takes (setting fleets)")
        per_node = who not in (ANONYMOUS, SHARED)
        if per_node and item.leader is not None and item.leader != who:
            self.refuse(environ, who, "leader", f"credential {who!r} cannot deliver as "
                        f"leader {item.leader!r}")
        if self.fence is not None and item.round is not None:
            try:
                self.fence.check(item, who)
            except Refused as refusal:
                if refusal.status.startswith("403"):
                    self.refuse(environ, who, "fence", refusal.reason)
                raise

    def record(self, item: Round) -> Reply:
        outcome, detail = self.store.add(item)
        self.outcomes[outcome.value] += 1
        if outcome is Outcome.STALE_EPOCH:
            return json_reply("409 Conflict", {
                "error": f"stale epoch {item.epoch}: epoch {detail} already accepted"})
        if outcome is Outcome.DUPLICATE:
            return json_reply("200 OK", {"status": "duplicate", "id": detail})
        return json_reply("201 Created", {"status": "stored", "id": detail})

    def seed_delivery(self, environ: dict[str, Any]) -> Reply:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        keyed = any(name in query for name in ("round", "epoch", "fleet", "incarnation"))
        who = self.sender(environ, keyed)
        item = round_from_query(query)
        self.admit(environ, item, who)
        return self.record(item)

    def json_delivery(self, environ: dict[str, Any]) -> Reply:
        who = self.sender(environ, keyed=True)
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused("415 Unsupported Media Type", "Content-Type must be application/json")
        item = round_from_json(read_json_body(environ))
        self.admit(environ, item, who)
        return self.record(item)

    def list_rounds(self, environ: dict[str, Any]) -> Reply:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        try:
            limit = min(int(query.get("limit", ["100"])[0]), MAX_LIMIT)
        except ValueError:
            raise Refused("400 Bad Request", "limit must be an integer") from None
        if limit < 1:
            raise Refused("400 Bad Request", "limit must be at least 1")
        before = whole_param(query["before"][0], "before") if "before" in query else None
        rounds = self.store.latest(limit, before, fleet_param(query))
        return json_reply("200 OK", {"host": self.hostname, "rounds": rounds})

    def series(self, environ: dict[str, Any]) -> Reply:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        fleet = fleet_param(query)
        name = query.get("range", [""])[0]
        if fleet is None:
            raise Refused("400 Bad Request", "missing query parameter 'fleet' (empty: rounds "
                          "sent without a fleet)")
        if name not in RANGES:
            raise Refused("400 Bad Request", f"range must be one of {', '.join(RANGES)}")
        if not self.store.known_fleet(fleet):
            raise Refused("404 Not Found", f"no rounds ever from fleet {fleet!r}")
        return json_reply("200 OK", {"fleet": fleet or None, "range": name,
                                     **self.store.series(fleet, name)})

    def summary(self, _environ: dict[str, Any]) -> Reply:
        return json_reply("200 OK", {"host": self.hostname, **self.store.summary()})

    def health(self, _environ: dict[str, Any]) -> Reply:
        self.store.summary()
        return json_reply("200 OK", {"status": "ok"})

    def metrics(self, _environ: dict[str, Any]) -> Reply:
        return Reply("200 OK", generate_latest(self.registry), PROMETHEUS_CONTENT_TYPE)

    def page(self, _environ: dict[str, Any]) -> Reply:
        return Reply("200 OK", render_page(self.hostname).encode(), "text/html; charset=utf-8")
