"""The collector's HTTP interface as a plain WSGI application.

Writes: the seed's `GET /nuevo?dato=<mean>` and the daemon's `POST /api/rounds` (JSON).
A write keyed by (fleet, incarnation, round) is stored once however often it is sent; the
seed's endpoint is keyed only when it is given `round` (and `epoch`), as newer daemons do.
Reads: `/` (the page), `/api/rounds`, `/api/series`, `/api/summary`, `/healthz`,
`/metrics`; none of them reads more rows as history grows.
Every refusal is a 4xx with a one-line JSON `error`, and stores nothing.
"""

import hmac
import json
import math
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import generate_latest

from ..metrics import CONTENT_TYPE
from .backend import RoundStore, StoreUnavailable
from .metrics import collector_registry
from .page import render_page
from .series import RANGES
from .store import Outcome, Round

MAX_BODY = 16 * 1024
MAX_LIMIT = 1000
MAX_INTEGER = 2**63 - 1  # SQLite's largest INTEGER: a larger one would fail the insert
MAX_FLEET = 200
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
INCARNATION = re.compile(r"[A-Za-z0-9_-]{1,64}")
DIGITS = re.compile(r"[0-9]{1,19}")
SEED_KEY = ("round", "epoch", "fleet", "incarnation")
StartResponse = Callable[..., Any]


class Refused(Exception):
    """A request we will not act on; `status` and a one-line reason for the client."""

    def __init__(self, status: str, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass
class Reply:
    status: str
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(status: str, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Refused("400 Bad Request", f"{name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise Refused("400 Bad Request", f"{name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise Refused("400 Bad Request", f"{name} must be a finite number")
    return number


def whole(value: Any, name: str, minimum: int) -> int:
    in_range = isinstance(value, int) and minimum <= value <= MAX_INTEGER
    if isinstance(value, bool) or not in_range:
        raise Refused("400 Bad Request", f"{name} must be an integer from {minimum} to 2^63-1")
    return value


def whole_param(value: str, name: str) -> int:
    """A query parameter's integer >= 0, in plain ASCII digits (int() would also take
    signs, spaces, underscores and other scripts' digits)."""
    if not DIGITS.fullmatch(value):
        raise Refused("400 Bad Request", f"{name} must be an integer from 0 to 2^63-1")
    return whole(int(value), name, 0)


def storable(value: str) -> bool:
    """What both stores can hold: PostgreSQL's text refuses NUL, and neither database
    takes an unpaired surrogate (a JSON string may carry one)."""
    return UNSTORABLE.search(value) is None


def text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit or not storable(value):
        raise Refused("400 Bad Request", f"{name} must be a string of 1-{limit} characters, "
                                         "without NUL")
    return value


def incarnation(value: Any) -> str:
    if not isinstance(value, str) or not INCARNATION.fullmatch(value):
        raise Refused("400 Bad Request",
                      "incarnation must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'")
    return value


def measured_at(value: Any, clock: Any) -> float | None:
    """A leader marks a time from an unsynchronised clock (clock.py); storing it would
    chart the round at 1970 or wherever the Pi booted, so it is stored without one."""
    if value is None:
        return None
    checked = finite(value, "time")
    return None if clock == "unsynced" else checked


def round_from_json(payload: Any) -> Round:
    if not isinstance(payload, dict):
        raise Refused("400 Bad Request", "body must be a JSON object")
    for name in ("mean", "round", "epoch"):
        if name not in payload:
            raise Refused("400 Bad Request", f"missing field {name!r}")
    optional = {name: payload.get(name) for name in ("count", "min", "max", "time", "leader",
                                                      "fleet", "incarnation")}
    return Round(
        mean=finite(payload["mean"], "mean"),
        source="json",
        round=whole(payload["round"], "round", 0),
        epoch=whole(payload["epoch"], "epoch", 0),
        count=None if optional["count"] is None else whole(optional["count"], "count", 1),
        min=None if optional["min"] is None else finite(optional["min"], "min"),
        max=None if optional["max"] is None else finite(optional["max"], "max"),
        measured_at=measured_at(optional["time"], payload.get("clock")),
        leader=None if optional["leader"] is None else text(optional["leader"], "leader", 64),
        fleet=None if optional["fleet"] is None else text(optional["fleet"], "fleet", MAX_FLEET),
        incarnation=None if optional["incarnation"] is None else incarnation(
            optional["incarnation"]),
    )


def round_from_query(query: dict[str, list[str]]) -> Round:
    """The seed's `dato`, and the delivery key a newer daemon adds to it.

    With `round` and `epoch` the call is de-duplicated and fenced like a JSON round;
    with neither, it is the seed's keyless call. Any other mix is refused: a sender that
    believes its call is keyed must not be stored at least once without knowing.
    """
    values = query.get("dato")
    if not values:
        raise Refused("400 Bad Request", "missing query parameter 'dato'")
    mean = finite(values[0], "dato")
    given = {name: query[name][0] for name in SEED_KEY if name in query}
    if not given:
        return Round(mean=mean, source="nuevo")
    if "round" not in given or "epoch" not in given:
        raise Refused("400 Bad Request", "a delivery key needs both 'round' and 'epoch' "
                      f"(given: {', '.join(given)})")
    return Round(
        mean=mean,
        source="nuevo",
        round=whole_param(given["round"], "round"),
        epoch=whole_param(given["epoch"], "epoch"),
        fleet=text(given["fleet"], "fleet", MAX_FLEET) if "fleet" in given else None,
        incarnation=incarnation(given["incarnation"]) if "incarnation" in given else None,
    )


def fleet_param(query: dict[str, list[str]]) -> str | None:
    """A read's `fleet`: a name, or empty for the rounds sent without one."""
    if "fleet" not in query:
        return None
    fleet = query["fleet"][0]
    if len(fleet) > MAX_FLEET or not storable(fleet):
        raise Refused("400 Bad Request",
                      f"fleet must be at most {MAX_FLEET} characters, without NUL")
    return fleet


class Collector:
    def __init__(self, store: RoundStore, token: str | None = None) -> None:
        self.store = store
        self.token = token
        self.hostname = socket.gethostname()
        self.outcomes: Counter[str] = Counter()
        self.registry = collector_registry(self.outcomes, store)
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

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        handler = self.routes.get((method, path))
        try:
            if handler is None:
                known = {m for (m, p) in self.routes if p == path}
                if known:
                    raise Refused("405 Method Not Allowed", f"{method} not allowed on {path}",
                                  [("Allow", ", ".join(sorted(known)))])
                raise Refused("404 Not Found", f"no such path {path}")
            reply = handler(environ)
        except Refused as refusal:
            if handler in (self.seed_delivery, self.json_delivery):
                self.outcomes["refused"] += 1
            reply = json_reply(refusal.status, {"error": refusal.reason})
            reply.headers = refusal.headers
        except StoreUnavailable as error:
            reply = json_reply("503 Service Unavailable", {"error": str(error)})
            reply.headers = [("Retry-After", "1")]
        start_response(reply.status, [("Content-Type", reply.content_type),
                                      ("Content-Length", str(len(reply.body))),
                                      ("Cache-Control", "no-store"), *reply.headers])
        return [reply.body]

    def authorize(self, environ: dict[str, Any]) -> None:
        if self.token is None:
            return
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            self.outcomes["unauthorized"] += 1
            raise Refused("401 Unauthorized", "a valid bearer token is required to write",
                          [("WWW-Authenticate", 'Bearer realm="zk-collector"')])

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
        self.authorize(environ)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        return self.record(round_from_query(query))

    def json_delivery(self, environ: dict[str, Any]) -> Reply:
        self.authorize(environ)
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused("415 Unsupported Media Type", "Content-Type must be application/json")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Refused("400 Bad Request", "invalid Content-Length") from None
        if length > MAX_BODY:
            raise Refused("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
        raw = environ["wsgi.input"].read(length)
        try:
            payload = json.loads(raw)
        except UnicodeDecodeError:
            raise Refused("400 Bad Request", "malformed JSON: not UTF-8") from None
        except json.JSONDecodeError as error:
            raise Refused("400 Bad Request", f"malformed JSON: {error.msg}") from None
        return self.record(round_from_json(payload))

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
        return Reply("200 OK", generate_latest(self.registry), CONTENT_TYPE)

    def page(self, _environ: dict[str, Any]) -> Reply:
        return Reply("200 OK", render_page(self.hostname).encode(), "text/html; charset=utf-8")
