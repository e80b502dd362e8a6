"""The broker's hand-written frame codec is byte-for-byte pamqp's (design rule 2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pamqp import body, commands, frame, header

from trioworker.testing._broker._content import Content
from trioworker.testing._broker._frames import (
    decode_publish,
    decode_settle,
    encode_confirm,
    encode_content,
    encode_deliver,
    encode_get_ok,
    encode_return,
)

names = st.text(alphabet="abcXYZ019-_.:", max_size=40)
channels = st.integers(1, 65535)
tags = st.integers(0, 2**63 - 1)  # pamqp encodes a long-long as signed


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    return bytes((len(raw),)) + raw


@given(channels, names, tags, st.booleans(), names, names)
def test_deliver(channel: int, ctag: str, tag: int, redelivered: bool, ex: str, rk: str) -> None:
    expected = frame.marshal(
        commands.Basic.Deliver(
            consumer_tag=ctag,
            delivery_tag=tag,
            redelivered=redelivered,
            exchange=ex,
            routing_key=rk,
        ),
        channel,
    )
    assert encode_deliver(channel, _shortstr(ctag), tag, redelivered, ex, rk) == expected


@given(channels, tags, st.booleans(), names, names, st.integers(0, 2**32 - 1))
def test_get_ok(channel: int, tag: int, redelivered: bool, ex: str, rk: str, count: int) -> None:
    expected = frame.marshal(
        commands.Basic.GetOk(
            delivery_tag=tag,
            redelivered=redelivered,
            exchange=ex,
            routing_key=rk,
            message_count=count,
        ),
        channel,
    )
    assert encode_get_ok(channel, tag, redelivered, ex, rk, count) == expected


@given(channels, st.integers(300, 599), st.text(max_size=60), names, names)
def test_return(channel: int, code: int, text: str, ex: str, rk: str) -> None:
    expected = frame.marshal(
        commands.Basic.Return(reply_code=code, reply_text=text, exchange=ex, routing_key=rk),
        channel,
    )
    assert encode_return(channel, code, text, ex, rk) == expected


@given(channels, tags, st.booleans(), st.booleans())
def test_confirm(channel: int, tag: int, multiple: bool, ack: bool) -> None:
    method = (
        commands.Basic.Ack(delivery_tag=tag, multiple=multiple)
        if ack
        else commands.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=False)
    )
    assert encode_confirm(channel, tag, multiple, ack) == frame.marshal(method, channel)


@given(
    channels,
    st.binary(max_size=20000),
    st.integers(4096, 9000),
    st.none() | st.text(alphabet="abc/+", max_size=20),
    st.none() | st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=3),
)
def test_content(
    channel: int, data: bytes, frame_max: int, content_type: str | None, headers: dict | None
) -> None:
    props = commands.Basic.Properties(content_type=content_type, headers=headers)
    content = Content("", "", props.marshal(), data)
    expected = frame.marshal(header.ContentHeader(0, len(data), props), channel)
    limit = frame_max - 8
    for start in range(0, len(data), limit):
        expected += frame.marshal(body.ContentBody(data[start : start + limit]), channel)
    assert encode_content(channel, content, frame_max) == expected


@given(names, names, st.booleans(), st.booleans())
def test_decode_publish(exchange: str, routing_key: str, mandatory: bool, immediate: bool) -> None:
    data = frame.marshal(
        commands.Basic.Publish(
            exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=immediate
        ),
        1,
    )
    assert decode_publish(data, 11, len(data) - 1) == (exchange, routing_key, mandatory, immediate)


@given(tags, st.booleans(), st.booleans())
def test_decode_settle(tag: int, multiple: bool, requeue: bool) -> None:
    for method, bits in (
        (commands.Basic.Ack(delivery_tag=tag, multiple=multiple), int(multiple)),
        (
            commands.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue),
            int(multiple) | (2 if requeue else 0),
        ),
        (commands.Basic.Reject(delivery_tag=tag, requeue=requeue), int(requeue)),
    ):
        data = frame.marshal(method, 1)
        assert decode_settle(data, 11, len(data) - 1) == (tag, bits)
