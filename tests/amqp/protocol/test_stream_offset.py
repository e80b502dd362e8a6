"""``stream_offset_of``: the ``x-stream-offset`` header read from raw property bytes, as a
full decode would read it — or ``UNKNOWN`` where it cannot walk them."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trioworker.amqp import BasicProperties
from trioworker.amqp.protocol import (
    UNKNOWN_OFFSET,
    LocalProtocolError,
    decode_properties,
    stream_offset_of,
)
from trioworker.amqp.protocol._frames import encode_properties
from trioworker.amqp.protocol._stream_offset import OFFSET_KEY


def raw(**properties: Any) -> bytes:
    return encode_properties(BasicProperties(**properties))


#: Property lists of two stream deliveries, as RabbitMQ 3.10 sent them: the first message
#: was published with a content type and headers, the second with no properties. The
#: broker appends its offset header ('l', 8 bytes) to the table.
FROM_RABBITMQ = [
    (
        b"\xa0\x00\x10application/json\x00\x00\x00(\x01nb\x05\x04userS\x00\x00\x00\x01a"
        b"\x0fx-stream-offsetl\x00\x00\x00\x00\x00\x00\x00\x00",
        0,
    ),
    (b" \x00\x00\x00\x00\x19\x0fx-stream-offsetl\x00\x00\x00\x00\x00\x00\x00\x01", 1),
]


def test_a_stream_delivery_as_rabbitmq_sends_it() -> None:
    for data, offset in FROM_RABBITMQ:
        assert stream_offset_of(data) == offset
        assert decode_properties(data).headers["x-stream-offset"] == offset
    assert stream_offset_of(raw(headers={"x-stream-offset": 41})) == 41
    assert stream_offset_of(raw(headers={"x-stream-offset": 2**40})) == 2**40
    props = raw(content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                headers={"a": "b", "x-stream-offset": 7, "z": [1, {"n": None}]})  # fmt: skip
    assert stream_offset_of(props) == 7


def test_no_header_or_no_offset_is_none() -> None:
    assert stream_offset_of(b"\x00\x00") is None
    assert stream_offset_of(raw(content_type="text/plain")) is None
    assert stream_offset_of(raw(headers={"x-attempt": 2})) is None
    # Same key, another type: not the broker's offset header (a full decode would not
    # see an int either).
    assert stream_offset_of(raw(headers={"x-stream-offset": "7"})) is None


def test_what_cannot_be_walked_is_unknown() -> None:
    good = raw(headers={"x-stream-offset": 3})
    for cut in range(len(good) - 1):
        assert stream_offset_of(good[:cut]) in (UNKNOWN_OFFSET, None), cut
    assert stream_offset_of(good + b"\x00") == 3  # the header table is self-delimiting
    assert stream_offset_of(b"\x20\x01" + good[2:]) == UNKNOWN_OFFSET  # continuation flag
    table = b"\x01k" + b"Q" + b"\x00"  # an unknown field type
    weird = b"\x20\x00" + len(table).to_bytes(4, "big") + table
    assert stream_offset_of(weird) == UNKNOWN_OFFSET


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.decimals(places=2, min_value=-1000, max_value=1000, allow_nan=False)
    | st.datetimes(
        min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2100, 1, 1)
    ).map(lambda d: d.replace(microsecond=0)),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=16), values, max_size=6),
    st.none() | st.integers(min_value=0, max_value=2**62),
    st.booleans(),
)
def test_it_agrees_with_a_full_decode(
    headers: dict[str, Any], offset: int | None, content_type: bool
) -> None:
    headers.pop(OFFSET_KEY.decode(), None)
    if offset is not None:
        headers[OFFSET_KEY.decode()] = offset
    try:
        data = raw(headers=headers or None, content_type="a/b" if content_type else None)
    except (TypeError, ValueError, OverflowError, decimal.InvalidOperation, LocalProtocolError):
        return  # pamqp cannot encode it: no such message reaches us
    fast = stream_offset_of(data)
    if fast == UNKNOWN_OFFSET:
        return  # the caller decodes in full
    decoded = (decode_properties(data).headers or {}).get(OFFSET_KEY.decode())
    assert fast == (decoded if isinstance(decoded, int) and not isinstance(decoded, bool) else None)
    assert fast == offset
