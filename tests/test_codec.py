"""codec.py: the one JSON decoder for untrusted payloads raises `Undecodable` and nothing
else, whatever the bytes: the bounds hold before `json` sees them."""

from __future__ import annotations

import json
import math

import pytest

from zk_sensor.codec import (
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    MAX_WHOLE,
    MAX_ZNODE_BYTES,
    Undecodable,
    decode_json,
    finite_number,
    json_object,
    text_field,
    whole_number,
)

# Pure logic, no server: part of the fast tier (make check).
pytestmark = pytest.mark.fast


@pytest.mark.parametrize("payload", [
    b'{"round": 3, "last": {"mean": 1.5, "ok": [true, false, null]}}',
    '{"text": "[[[[ \\" 123456789012345678901234567890123456789"}',
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b"-" + b"9" * (MAX_NUMBER_CHARS - 1),
    b" 12 ",
])
def test_json_within_the_bounds_decodes_as_json_does(payload: bytes | str) -> None:
    assert decode_json(payload) == json.loads(payload)


@pytest.mark.parametrize(("payload", "reason"), [
    (None, "empty"),
    (b"", "not JSON"),
    (b"[" * 5000, "nested deeper"),
    (b'{"a": ' * 5000, "nested deeper"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
    (b"9" * 5000, "a number longer"),
    (b'{"round": 1' + b"0" * 4400 + b"}", "a number longer"),
    (b"1" * (MAX_NUMBER_CHARS + 1), "a number longer"),
    (b" " * (MAX_ZNODE_BYTES + 1), "larger than"),
    (b'"\xff\xfe"', "not UTF-8"),
    (b"{garbage", "not JSON"),
    (b"]" * 6000 + b"[" * 5000, "not JSON"),
])
def test_garbage_raises_undecodable_with_a_reason(payload: bytes | None, reason: str) -> None:
    with pytest.raises(Undecodable, match=reason):
        decode_json(payload)


def test_undecodable_is_a_value_error_every_decoder_already_handles() -> None:
    assert issubclass(Undecodable, ValueError)


def test_the_bounds_are_the_callers_to_tighten() -> None:
    with pytest.raises(Undecodable, match="larger than 4 bytes"):
        decode_json(b"12345", max_bytes=4)
    with pytest.raises(Undecodable, match="nested deeper than 1"):
        decode_json(b"[[1]]", max_depth=1)


def test_json_object_refuses_what_is_not_an_object() -> None:
    assert json_object(b'{"a": 1}') == {"a": 1}
    for payload in (b"[1]", b"1", b'"x"', b"null"):
        with pytest.raises(Undecodable, match="not a JSON object"):
            json_object(payload)


@pytest.mark.parametrize("value", [True, False, -1, 1.0, MAX_WHOLE + 1, 10**4000, "3", None])
def test_a_whole_number_is_a_64_bit_count_and_no_bool(value: object) -> None:
    with pytest.raises(Undecodable):
        whole_number(value, "round")


def test_whole_numbers_in_range_pass() -> None:
    assert whole_number(0, "round") == 0 and whole_number(MAX_WHOLE, "round") == MAX_WHOLE


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, True, "1.5", None])
def test_a_finite_number_is_finite(value: object) -> None:
    with pytest.raises(Undecodable):
        finite_number(value, "value")


def test_finite_numbers_pass_as_floats() -> None:
    assert finite_number(3, "value") == 3.0 and finite_number(-2.5, "value") == -2.5


def test_a_text_field_is_a_string_a_log_can_write() -> None:
    assert text_field("node-1", "leader") == "node-1"
    with pytest.raises(Undecodable, match="not valid Unicode"):
        text_field(json.loads('"\\ud800"'), "leader")
    with pytest.raises(Undecodable, match="not a string"):
        text_field(7, "leader")
