"""``request.json()`` on hostile bodies: every malformed body is a ``BadRequest`` (→ 400).

Python's ``json`` raises ``RecursionError`` on deep nesting and ``ValueError`` on integers
past its digit limit, accepts NaN and Infinity, and reads UTF-16 and UTF-32 bytes: each of
those was a 500 with a traceback, or a value no JSON peer could have meant.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from trioworker.http import BadRequest, Request
from trioworker.http._json import MAX_INT_DIGITS, parse_json


async def json_of(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        assert not sent
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return await Request(scope, receive, app=None).json()


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a":' * 100_000, "nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # well-formed, still refused
        (b"1" * (MAX_INT_DIGITS + 1), f"more than {MAX_INT_DIGITS} digits"),
        (b'{"n": -' + b"9" * 100_000 + b"}", f"more than {MAX_INT_DIGITS} digits"),
        (b"NaN", "NaN is not valid JSON"),
        (b"[1, Infinity]", "Infinity is not valid JSON"),
        (b'{"x": -Infinity}', "-Infinity is not valid JSON"),
        (b"1e400", "too large"),
        ('{"a": 1}'.encode("utf-16"), "must be UTF-8, this body looks like utf-16"),
        ('{"a": 1}'.encode("utf-16-le"), "must be UTF-8, this body looks like utf-16-le"),
        ('{"a": 1}'.encode("utf-32"), "must be UTF-8, this body looks like utf-32"),
        (b'{"a": "\xff"}', "not valid UTF-8 (invalid start byte at byte 7)"),
        (b'"\xed\xa0\x80"', "not valid UTF-8"),  # an encoded surrogate
        (b"", "the body is empty"),
        (b"\xef\xbb\xbf  ", "the body is empty"),
        (b'{"a": 1} x', "Extra data (line 1, column 10)"),
    ],
)
async def test_malformed_bodies_are_bad_requests(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await json_of(body)
    assert caught.value.status == 400
    assert caught.value.message.startswith("malformed JSON body: ")
    assert reason in caught.value.message
    assert len(caught.value.message) < 120  # short: it goes to the client as is


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # a UTF-8 BOM is ignored (RFC 8259 section 8.1)
        (b"1" * MAX_INT_DIGITS, int("1" * MAX_INT_DIGITS)),  # the limit itself is fine
        (b"-" + b"1" * MAX_INT_DIGITS, -int("1" * MAX_INT_DIGITS)),
        (b"[1.5e308, -0.0, 1e-400]", [1.5e308, -0.0, 0.0]),  # underflow is not an error
        ('{"é": "☃"}'.encode(), {"é": "☃"}),
        (b"[" * 100 + b"]" * 100, nested(100)),
    ],
)
async def test_valid_bodies_parse(body: bytes, value: Any) -> None:
    assert await json_of(body) == value


def test_the_integer_limit_does_not_depend_on_the_process_setting() -> None:
    """``sys.set_int_max_str_digits(0)`` lifts Python's limit; ours stays."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(BadRequest, match="digits"):
            parse_json(b"7" * 50_000)
    finally:
        sys.set_int_max_str_digits(previous)


def test_bad_request_is_still_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_json(b"NaN")
