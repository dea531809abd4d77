"""Validation of the fleet-wide config values, shared by the daemon and the CLI.

The CLI refuses a bad value before writing it; the daemon refuses one written behind
its back (zkCli.sh) and keeps the last good value. Both must agree on what is bad.
"""

import math
import re
from collections.abc import Callable
from urllib.parse import urlsplit

MIN_PERIOD = 0.1
MAX_PERIOD = 3600.0
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A znode may hold 1 MiB: a value is refused, and shown cut, well before a log line grows.
MAX_PERIOD_TEXT = 64
MAX_URL = 2048
MAX_COLLECTORS = 16
SHOWN = 80


class InvalidValue(ValueError):
    """A value that must not be used; its message is one line meant for an operator."""


def shown(text: str) -> str:
    """A value as a refusal quotes it: cut, so one bad value is one readable line."""
    if len(text) <= SHOWN:
        return repr(text)
    return f"{text[:SHOWN]!r}... ({len(text)} characters)"


def parse_sampling_period(text: str) -> float:
    if len(text) > MAX_PERIOD_TEXT:
        raise InvalidValue(f"sampling_period {shown(text)} is not a number")
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidValue(f"sampling_period {shown(text)} is not a number") from None
    if not math.isfinite(value):
        raise InvalidValue(f"sampling_period {shown(text)} is not a finite number")
    if value <= 0:
        raise InvalidValue(f"sampling_period {shown(text)} must be greater than zero")
    if value < MIN_PERIOD or value > MAX_PERIOD:
        raise InvalidValue(
            f"sampling_period {shown(text)} is outside {MIN_PERIOD:g}..{MAX_PERIOD:g} seconds"
        )
    return value


def parse_api_url(text: str) -> str:
    """One collector URL or several separated by commas, in the order a node tries them
    (delivery.py). One bad entry refuses the whole value: a half-applied list would
    quietly lose a collector. The result is the entries joined by bare commas."""
    if len(text) > MAX_URL * MAX_COLLECTORS:
        raise InvalidValue(f"api_url {shown(text)} is longer than "
                           f"{MAX_URL * MAX_COLLECTORS} characters")
    entries = [entry.strip() for entry in text.split(",")]
    if len(entries) > MAX_COLLECTORS:
        raise InvalidValue(f"api_url {shown(text)} lists {len(entries)} URLs, more than "
                           f"{MAX_COLLECTORS}")
    if len(entries) > 1 and not all(entries):
        raise InvalidValue(f"api_url {shown(text)} has an empty entry between commas")
    urls = [parse_collector_url(entry) for entry in entries]
    if len(set(urls)) < len(urls):
        raise InvalidValue(f"api_url {shown(text)} lists the same URL twice")
    return ",".join(urls)


def api_urls(value: str) -> tuple[str, ...]:
    """The URLs of an api_url value that parse_api_url accepted."""
    return tuple(entry.strip() for entry in value.split(","))


def parse_collector_url(text: str) -> str:
    """One http(s) URL; a refusal quotes it, which names the bad entry of a list."""
    if len(text) > MAX_URL:
        raise InvalidValue(f"api_url {shown(text)} is longer than {MAX_URL} characters")
    url = text.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidValue(f"api_url {shown(text)} is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidValue(f"api_url {shown(text)} must start with http:// or https://")
    if not parts.hostname:
        raise InvalidValue(f"api_url {shown(text)} has no host")
    if port == 0:
        raise InvalidValue(f"api_url {shown(text)} has port 0")
    if any(ch.isspace() for ch in url):
        raise InvalidValue(f"api_url {shown(text)} contains white space")
    return url


def origin_of(url: str) -> str:
    """scheme://host:port of a URL, the port made explicit, for comparing destinations."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def parse_origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of scheme://host[:port], each normalised by origin_of."""
    origins = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        url = parse_collector_url(item)
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidValue(f"origin {item!r} must be scheme://host[:port], without a path")
        origins.append(origin_of(url))
    return tuple(origins)


def parse_node_id(text: str) -> str:
    node_id = str(text).strip()
    if not NODE_ID_PATTERN.match(node_id):
        raise InvalidValue(
            f"node id {shown(text)} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    return node_id


CONFIG_PARSERS: dict[str, Callable[[str], float | str]] = {
    "sampling_period": parse_sampling_period,
    "api_url": parse_api_url,
}


def format_config_value(value: float | str) -> str:
    """Plain text, as zkCli.sh would write it: `6`, not `6.0`."""
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) else repr(value)
    return value
