"""The ``retry`` field: leading zeros are not significant, huge values are clamped.

A differential run against another WHATWG-following parser found ``retry:0000000000399``
read as 999999999999 (the 12-digit cap counted the zeros); the standard reads it as 399.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioworker.sse import EventParser

#: The clamp: the largest retry the parser reports (12 significant digits).
MAX_RETRY = 999_999_999_999


def retry_of(value: bytes) -> int | None:
    parser = EventParser()
    parser.feed(b"retry:" + value + b"\ndata: x\n\n")
    event = parser.next_event()
    assert event is not None
    assert event.retry == parser.retry
    return event.retry


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0000000000399", 399),  # the case the differential run found
        (b"0399", 399),
        (b"000", 0),
        (b"00", 0),
        (b"0" * 5000 + b"7", 7),  # any number of zeros, still cheap
        (b"0" * 20 + b"999999999999", MAX_RETRY),  # 12 significant digits: exact
        (b"0" * 20 + b"1000000000000", MAX_RETRY),  # 13 significant digits: clamped
        (b"0" * 3 + b"1" * 5000, MAX_RETRY),  # past Python's int() digit limit: no crash
    ],
)
def test_leading_zeros_do_not_count_towards_the_cap(value: bytes, expected: int) -> None:
    assert retry_of(value) == expected


@given(
    zeros=st.integers(min_value=0, max_value=200),
    digits=st.text(alphabet="0123456789", min_size=1, max_size=20),
)
def test_leading_zeros_never_change_the_value(zeros: int, digits: str) -> None:
    """``0…0N`` parses as ``N`` does; both are ``N`` (or the clamp, past 12 digits)."""
    plain = retry_of(digits.encode())
    padded = retry_of(b"0" * zeros + digits.encode())
    assert padded == plain
    assert plain == min(int(digits), MAX_RETRY)
