"""Differential tests: the hand-written hot-frame codec in ``_frames.py`` against pamqp.

Layering rule 2 of docs/architecture.md: hot frames may be hand-encoded for speed *only*
with tests proving byte-for-byte equality with pamqp, the reference codec, on generated
inputs. Every test here builds the same frame both ways and compares bytes (or decoded
fields).

pamqp encodes ``longlong`` fields (delivery tags, body sizes) as *signed* 64-bit integers and
refuses values above 2**63 - 1, so the differential range for those stops there; the spec's
unsigned range above it is checked against ``struct`` directly.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from trioworker.amqp.protocol import (
    LocalProtocolError,
    PropertyDecodeError,
    RemoteProtocolError,
    decode_properties,
)
from trioworker.amqp.protocol import _frames as F
from trioworker.amqp.protocol import _methods as M

from ._broker import build

SETTINGS = settings(max_examples=200, deadline=None)

SHORTSTR_PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)
MAX_PAMQP_LONGLONG = 2**63 - 1

channels = st.integers(0, 65535)
tags = st.integers(0, MAX_PAMQP_LONGLONG)


def _fit_shortstr(text: str) -> str:
    """Cut ``text`` to at most 255 UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:255].decode("utf-8", "ignore")


# Mostly short strings, with the 255-byte limit itself (ASCII and multi-byte) well represented.
shortstrs = st.one_of(
    st.text(max_size=40),
    st.text(min_size=60, max_size=255).map(_fit_shortstr),
    st.sampled_from(["", "x" * 255, "é" * 127 + "x", "€" * 85, "😀" * 63 + "abc"]),
)
overlong_shortstrs = st.one_of(
    st.sampled_from(["x" * 256, "é" * 128, "€" * 86, "😀" * 64]),
    st.text(min_size=64, max_size=300).filter(lambda s: len(s.encode("utf-8")) > 255),
)

table_keys = st.text(max_size=20).map(_fit_shortstr)
scalar_values = st.one_of(
    st.text(max_size=30),
    st.integers(-(2**63), MAX_PAMQP_LONGLONG),
    st.booleans(),
)
table_values = st.recursive(
    scalar_values,
    lambda inner: st.one_of(
        st.dictionaries(table_keys, inner, max_size=4),
        st.lists(inner, max_size=4),
    ),
    max_leaves=12,
)
headers_tables = st.dictionaries(table_keys, table_values, max_size=6)

utc_offsets = st.integers(-14 * 60, 14 * 60).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)


@st.composite
def timestamps(draw: st.DrawFn) -> datetime.datetime:
    """Timezone-aware datetimes at whole seconds, at or after 1970 in UTC."""
    moment = draw(
        st.datetimes(
            min_value=datetime.datetime(1970, 1, 1),
            max_value=datetime.datetime(9999, 12, 30),
        )
    ).replace(microsecond=0, tzinfo=datetime.UTC)
    return moment.astimezone(draw(utc_offsets))


property_values: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(SHORTSTR_PROPERTIES, shortstrs),
    "headers": headers_tables,
    "delivery_mode": st.integers(0, 255),
    "priority": st.integers(0, 255),
    "timestamp": timestamps(),
}


def make_properties(**values: Any) -> commands.Basic.Properties:
    """``Basic.Properties`` with any values (pamqp's constructor allows only delivery_mode
    1 or 2 and an empty cluster_id; the wire format and ``marshal()`` take any)."""
    props: commands.Basic.Properties = build(commands.Basic.Properties, **values)
    return props


@st.composite
def properties(draw: st.DrawFn) -> commands.Basic.Properties:
    names = draw(st.sets(st.sampled_from(sorted(property_values))))
    return make_properties(**{name: draw(property_values[name]) for name in names})


# ------------------------------------------------------------------ Basic.Publish


@SETTINGS
@given(channels, shortstrs, shortstrs, st.booleans(), st.booleans())
def test_encode_publish_equals_pamqp(
    channel: int, exchange: str, routing_key: str, mandatory: bool, immediate: bool
) -> None:
    publish = build(
        commands.Basic.Publish,
        exchange=exchange,
        routing_key=routing_key,
        mandatory=mandatory,
        immediate=immediate,
    )
    expected = pamqp_frame.marshal(publish, channel)
    assert F.encode_publish(channel, exchange, routing_key, mandatory, immediate) == expected


@settings(max_examples=50, deadline=None)
@given(overlong_shortstrs, st.booleans())
def test_encode_publish_refuses_overlong_shortstr(text: str, in_exchange: bool) -> None:
    exchange, routing_key = (text, "rk") if in_exchange else ("ex", text)
    with pytest.raises(LocalProtocolError):
        F.encode_publish(1, exchange, routing_key, False, False)


# --------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(properties())
def test_encode_properties_equals_pamqp(props: commands.Basic.Properties) -> None:
    assert F.encode_properties(props) == props.marshal()


def test_encode_properties_none_and_empty() -> None:
    empty = commands.Basic.Properties().marshal()
    assert empty == b"\x00\x00"
    assert F.encode_properties(None) == empty
    assert F.encode_properties(commands.Basic.Properties()) == empty


def test_encode_properties_every_property_at_once() -> None:
    props = make_properties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"x-int": 7, "x-str": "é", "x-bool": True, "x-nested": {"a": [1, "b", False]}},
        delivery_mode=2,
        priority=9,
        correlation_id="corr",
        reply_to="amq.rabbitmq.reply-to",
        expiration="60000",
        message_id="m-1",
        timestamp=datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        message_type="order.created",
        user_id="guest",
        app_id="trioworker",
        cluster_id="c",
    )
    encoded = F.encode_properties(props)
    assert encoded == props.marshal()
    assert encoded[:2] == b"\xff\xfc"  # all 14 flags set, no continuation bit


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SHORTSTR_PROPERTIES), overlong_shortstrs)
def test_encode_properties_refuses_overlong_shortstr(name: str, text: str) -> None:
    with pytest.raises(LocalProtocolError):
        F.encode_properties(make_properties(**{name: text}))


@pytest.mark.parametrize(
    "values",
    [
        {"delivery_mode": 256},
        {"priority": -1},
        {"headers": {"k": object()}},
        {"timestamp": "yesterday"},
        {"content_type": 5},
    ],
    ids=["delivery_mode-256", "priority-negative", "header-object", "timestamp-str", "int-str"],
)
def test_encode_properties_bad_values_are_local_errors(values: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        F.encode_properties(make_properties(**values))


@settings(max_examples=200, deadline=None)
@given(properties())
def test_decode_properties_matches_pamqp_unmarshal(props: commands.Basic.Properties) -> None:
    """Our lazy decoder reads what pamqp's content header decoder reads."""
    raw = props.marshal()
    reference = pamqp_header.ContentHeader()
    reference.unmarshal(struct.pack(">HHQ", 60, 0, 0) + raw)
    decoded = decode_properties(F.encode_properties(props))
    for name in commands.Basic.Properties.__slots__:
        assert getattr(decoded, name) == getattr(reference.properties, name), name


@settings(max_examples=300, deadline=None)
@given(properties(), st.data())
def test_decode_properties_refuses_every_truncation(
    props: commands.Basic.Properties, data: st.DataObject
) -> None:
    """Cut anywhere after the flags, or with a byte appended: an error, never a shorter value."""
    raw = F.encode_properties(props)
    flag_bytes = 2
    if raw == b"\x00\x00":
        return
    cut = data.draw(st.integers(flag_bytes, len(raw) - 1), label="cut")
    with pytest.raises(PropertyDecodeError):
        decode_properties(raw[:cut])
    with pytest.raises(PropertyDecodeError):
        decode_properties(raw + b"\x00")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80",
        b"\x80\x00",  # content_type flagged, value missing
        b"\x80\x00\x02\xff\xfe",  # not UTF-8
        b"\x00\x40" + (0xFFFFFFFFFFFFFF00).to_bytes(8, "big"),  # pre-1970 timestamp
        b"\x00\x01",  # continuation flag, second flag word missing
        b"\x02\x00\x05abc",  # reply_to says 5 bytes, 3 follow
        b"\x02\x00\x03abcd",  # a byte after the last value
        b"\x20\x00\x00\x00\x00\x09\x01",  # headers table says 9 bytes, 1 follows
        b"\x00\x40\x00\x00\x00\x00",  # timestamp cut to 4 bytes
    ],
)
def test_decode_properties_failures_are_property_decode_errors(raw: bytes) -> None:
    with pytest.raises(PropertyDecodeError):
        decode_properties(raw)


# ------------------------------------------------------------------ content header


@SETTINGS
@given(channels, st.integers(0, MAX_PAMQP_LONGLONG), st.none() | properties())
def test_encode_content_header_equals_pamqp(
    channel: int, body_size: int, props: commands.Basic.Properties | None
) -> None:
    expected = pamqp_frame.marshal(pamqp_header.ContentHeader(0, body_size, props), channel)
    raw = F.encode_properties(props)
    assert F.encode_content_header(channel, body_size, raw) == expected


def test_encode_content_header_unsigned_body_size() -> None:
    # The spec's longlong is unsigned; pamqp stops at 2**63 - 1, the wire format does not.
    frame = F.encode_content_header(1, 2**64 - 1, b"\x00\x00")
    assert frame == b"\x02\x00\x01\x00\x00\x00\x0e\x00\x3c\x00\x00" + b"\xff" * 8 + b"\x00\x00\xce"


# ------------------------------------------------------------------------ bodies


def pamqp_bodies(channel: int, data: bytes, max_payload: int) -> list[bytes]:
    return [
        pamqp_frame.marshal(pamqp_body.ContentBody(data[i : i + max_payload]), channel)
        for i in range(0, len(data), max_payload)
    ]


@SETTINGS
@given(channels, st.binary(max_size=2000), st.integers(1, 600))
def test_encode_body_equals_pamqp(channel: int, data: bytes, max_payload: int) -> None:
    frames = F.encode_body(channel, data, max_payload)
    assert frames == pamqp_bodies(channel, data, max_payload)
    assert all(len(f) - F.FRAME_OVERHEAD <= max_payload for f in frames)


@pytest.mark.parametrize("size", [1, 4087, 4088, 4089, 8176, 8177, 3 * 4088 + 5])
def test_encode_body_splits_at_frame_max_minus_8(size: int) -> None:
    frame_max = 4096
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    frames = F.encode_body(5, data, frame_max - 8)
    assert frames == pamqp_bodies(5, data, frame_max - 8)
    assert len(frames) == -(-size // 4088)
    assert max(len(f) for f in frames) <= frame_max


def test_encode_body_empty_is_no_frame() -> None:
    assert F.encode_body(1, b"", 4088) == []


# ------------------------------------------------------------- acks, nacks, rejects


@SETTINGS
@given(channels, tags, st.booleans())
def test_encode_basic_ack_equals_pamqp(channel: int, tag: int, multiple: bool) -> None:
    expected = pamqp_frame.marshal(commands.Basic.Ack(tag, multiple), channel)
    assert F.encode_basic_ack(channel, tag, multiple) == expected


@SETTINGS
@given(channels, tags, st.booleans(), st.booleans())
def test_encode_basic_nack_equals_pamqp(
    channel: int, tag: int, multiple: bool, requeue: bool
) -> None:
    expected = pamqp_frame.marshal(commands.Basic.Nack(tag, multiple, requeue), channel)
    assert F.encode_basic_nack(channel, tag, multiple, requeue) == expected


@SETTINGS
@given(channels, tags, st.booleans())
def test_encode_basic_reject_equals_pamqp(channel: int, tag: int, requeue: bool) -> None:
    expected = pamqp_frame.marshal(commands.Basic.Reject(tag, requeue), channel)
    assert F.encode_basic_reject(channel, tag, requeue) == expected


def test_ack_tags_above_signed_range() -> None:
    frame = F.encode_basic_ack(1, 2**64 - 1, True)
    assert frame[11:21] == b"\xff" * 8 + b"\x01\xce"


# ---------------------------------------------------------------------- decoding


def method_bounds(frame: bytes) -> tuple[int, int]:
    """(start, end) of a method frame's arguments, as ``_parse`` passes them."""
    return F.FRAME_HEADER_SIZE + 4, len(frame) - 1


@SETTINGS
@given(shortstrs, tags, st.booleans(), shortstrs, shortstrs, st.binary(max_size=20))
def test_decode_deliver_equals_pamqp(
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    prefix: bytes,
) -> None:
    deliver = build(
        commands.Basic.Deliver,
        consumer_tag=consumer_tag,
        delivery_tag=delivery_tag,
        redelivered=redelivered,
        exchange=exchange,
        routing_key=routing_key,
    )
    frame = pamqp_frame.marshal(deliver, 3)
    _, _, reference = pamqp_frame.unmarshal(frame)
    start, end = method_bounds(frame)
    # Offsets into a bigger buffer, as when several frames arrive in one read.
    data = prefix + frame + b"\x01\x00\x03"
    decoded = F.decode_deliver(data, len(prefix) + start, len(prefix) + end)
    assert decoded == (
        reference.consumer_tag,
        reference.delivery_tag,
        reference.redelivered,
        reference.exchange,
        reference.routing_key,
    )
    assert decoded == (consumer_tag, delivery_tag, redelivered, exchange, routing_key)


def test_decode_deliver_unsigned_tag() -> None:
    payload = b"\x01c" + b"\xff" * 8 + b"\x01" + b"\x01e" + b"\x01r"
    assert F.decode_deliver(payload, 0, len(payload)) == ("c", 2**64 - 1, True, "e", "r")


@SETTINGS
@given(st.integers(-12, 12).filter(bool), st.booleans())
def test_decode_deliver_size_mismatch_is_remote_error(delta: int, pad: bool) -> None:
    frame = pamqp_frame.marshal(commands.Basic.Deliver("ctag", 1, False, "ex", "rk"), 1)
    start, end = method_bounds(frame)
    data = frame + (b"\x00" * 20 if pad else b"")
    with pytest.raises(RemoteProtocolError):
        F.decode_deliver(data, start, end + delta)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x05ab",
        b"\x01c" + b"\x00" * 4,
        b"\x02\xff\xfe" + b"\x00" * 9 + b"\x00\x00",  # consumer tag not UTF-8
        b"\x01c" + b"\x00" * 9 + b"\x00" + b"\x03rk",  # routing key runs past the end
    ],
)
def test_decode_deliver_malformed_is_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        F.decode_deliver(payload, 0, len(payload))


@SETTINGS
@given(tags, st.booleans(), st.booleans(), st.booleans())
def test_decode_confirm_equals_pamqp(tag: int, multiple: bool, nack: bool, requeue: bool) -> None:
    command = (
        commands.Basic.Nack(tag, multiple, requeue) if nack else commands.Basic.Ack(tag, multiple)
    )
    frame = pamqp_frame.marshal(command, 1)
    _, _, reference = pamqp_frame.unmarshal(frame)
    index = struct.unpack_from(">I", frame, F.FRAME_HEADER_SIZE)[0]
    assert index == (M.BASIC_NACK if nack else M.BASIC_ACK)
    start, end = method_bounds(frame)
    decoded_tag, bits = F.decode_confirm(frame, start, end)
    assert decoded_tag == reference.delivery_tag
    assert bool(bits & 1) == reference.multiple
    if nack:
        assert bool(bits & 2) == reference.requeue


@pytest.mark.parametrize("size", [0, 8, 10, 13])
def test_decode_confirm_wrong_size_is_remote_error(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        F.decode_confirm(b"\x00" * 20, 0, size)
