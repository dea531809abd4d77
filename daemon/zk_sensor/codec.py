"""Total JSON decoding for everything that crosses a trust boundary: znode payloads (any
fleet credential can write a poison one) and HTTP bodies.

Python's `json` is not total: deep nesting raises `RecursionError` (not a `ValueError`),
an integer of more than 4,300 digits raises the interpreter's digit limit, and its size is
whatever the sender chose. Everything here is checked before `json` sees it, so the one
exception a caller ever handles is `Undecodable`, a `ValueError` that every decoder
already treats as garbage.
"""

import json
import math
import re
from typing import Any

# A znode holds at most ZooKeeper's jute.maxbuffer (1 MiB by default); our largest
# payload (a barrier with the last round) is under 1 KiB.
MAX_ZNODE_BYTES = 64 * 1024
# Our payloads nest two levels deep; the ACL list three.
MAX_DEPTH = 8
# The longest integer we ever write is a 64-bit one (19 digits); a float's repr is < 25.
MAX_NUMBER_CHARS = 32
# Every whole number in a payload (a round, an epoch, a count) is one ZooKeeper, the
# collector's database and Prometheus all hold as a signed 64-bit integer.
MAX_WHOLE = 2**63 - 1
# A run of characters that could be one number longer than MAX_NUMBER_CHARS, anywhere
# (inside strings too): only a text with one needs the exact scan.
LONG_RUN = re.compile(f"[-+0-9.eE]{{{MAX_NUMBER_CHARS + 1}}}")


class Undecodable(ValueError):
    """A payload that is not JSON within our bounds; the message is one log line."""


def _check_shape(text: str, max_depth: int) -> None:
    """One pass over the text: nesting depth outside strings, and the length of every
    number token, so neither `RecursionError` nor the int digit limit can be reached."""
    depth = 0
    in_string = escaped = False
    number_run = 0
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char in "0123456789+-.eE":
            number_run += 1
            if number_run > MAX_NUMBER_CHARS:
                raise Undecodable(f"a number longer than {MAX_NUMBER_CHARS} characters")
            continue
        number_run = 0
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise Undecodable(f"nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1


def needs_shape_check(text: str, max_depth: int) -> bool:
    """Cheap and conservative (C-speed counts and one regex): a text with no more
    brackets than `max_depth` cannot nest deeper, and one without a long run of number
    characters holds no long number. Our own payloads (a reading is under 100 bytes, read
    by the leader once a round per device) never need the character-by-character scan."""
    brackets = text.count("[") + text.count("{")
    return brackets > max_depth or LONG_RUN.search(text) is not None


def decode_json(raw: bytes | str | None, *, max_bytes: int = MAX_ZNODE_BYTES,
                max_depth: int = MAX_DEPTH) -> Any:
    """The decoded value; raises `Undecodable` (and nothing else) for anything outside
    the bounds or not JSON at all."""
    if raw is None:
        raise Undecodable("empty")
    if len(raw) > max_bytes:
        raise Undecodable(f"larger than {max_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise Undecodable("not UTF-8") from None
    else:
        text = raw
    if needs_shape_check(text, max_depth):
        _check_shape(text, max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        message = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise Undecodable(f"not JSON: {message}") from None


def whole_number(value: Any, what: str) -> int:
    """A field that must be a whole number in 0..MAX_WHOLE: JSON's `true` is no number,
    and a float is no round."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WHOLE:
        raise Undecodable(f"{what} is not a whole number in 0..{MAX_WHOLE}")
    return value


def finite_number(value: Any, what: str) -> float:
    """A field that must be a finite number; JSON's `1e999` decodes to infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Undecodable(f"{what} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise Undecodable(f"{what} is not a finite number") from None
    if not math.isfinite(number):
        raise Undecodable(f"{what} is not a finite number")
    return number


def text_field(value: Any, what: str) -> str:
    """A field that must be a string that can be written out again: JSON's `\\ud800`
    decodes to a lone surrogate, which no UTF-8 stream (a log, a terminal) accepts."""
    if not isinstance(value, str):
        raise Undecodable(f"{what} is not a string")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Undecodable(f"{what} is not valid Unicode") from None
    return value


def json_object(raw: bytes | str | None) -> dict[str, Any]:
    """`decode_json` for the payloads that are all JSON objects."""
    payload = decode_json(raw)
    if not isinstance(payload, dict):
        raise Undecodable("not a JSON object")
    return payload
