"""What a write request carries, checked: its body (bounded before it is read) and the
round in it. Everything here is pure: a bad request raises `Refused` with a one-line
reason, and nothing is stored.

The body is decoded with codec.decode_json, so deep nesting, a 5,000-digit integer or
invalid UTF-8 is a 400 like any other malformed body, never an unhandled 500.
"""

import math
import re
from typing import Any

from zk_sensor.codec import Undecodable, decode_json
from zk_sensor.collector.store import Round

MAX_BODY = 16 * 1024
MAX_INTEGER = 2**63 - 1  # SQLite's largest INTEGER: a larger one would fail the insert
MAX_FLEET = 200
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
INCARNATION = re.compile(r"[A-Za-z0-9_-]{1,64}")
DIGITS = re.compile(r"[0-9]{1,19}")
SEED_KEY = ("round", "epoch", "fleet", "incarnation")


class Refused(Exception):
    """A request we will not act on; `status` and a one-line reason for the client."""

    def __init__(self, status: str, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


def content_length(environ: dict[str, Any], required: bool) -> int:
    """The declared body size, checked before a byte of the body is read: a negative one
    would read to the end of the stream, past every limit."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if not declared:
        if required:
            raise Refused("411 Length Required", "a write needs a Content-Length header")
        return 0
    if not DIGITS.fullmatch(declared):
        raise Refused("400 Bad Request", "Content-Length must be a decimal number of bytes")
    return int(declared)


def read_json_body(environ: dict[str, Any]) -> Any:
    length = content_length(environ, required=True)
    if length > MAX_BODY:
        raise Refused("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
    raw = environ["wsgi.input"].read(length)
    try:
        return decode_json(raw, max_bytes=MAX_BODY)
    except Undecodable as error:
        raise Refused("400 Bad Request", f"malformed JSON: {error}") from None


def finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Refused("400 Bad Request", f"{name} must be a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise Refused("400 Bad Request", f"{name} {value!r:.40} is not a number") from None
    if not math.isfinite(number):
        raise Refused("400 Bad Request", f"{name} must be a finite number")
    return number


def whole(value: Any, name: str, minimum: int) -> int:
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if number is None or not minimum <= number <= MAX_INTEGER:
        raise Refused("400 Bad Request", f"{name} must be an integer from {minimum} to 2^63-1")
    return number


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


def measured_at(value: Any, clock: object) -> float | None:
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
