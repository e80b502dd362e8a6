"""Content assembly: a content-bearing method, its header frame, its body frames.

A message arrives as a method that announces content (``Basic.Deliver``, ``Basic.GetOk``
or ``Basic.Return``) followed *on the same channel* by exactly one content header frame and
then body frames whose sizes sum to the size the header announced (spec 4.2.6). Frames of
other channels may interleave, so each channel assembles its own message
(:class:`~._channel.ChannelRecord` holds the parts). Anything else on that channel before
the message is complete is a 505 ``UNEXPECTED_FRAME``; a body longer than announced is a
501 ``FRAME_ERROR``.

The header announces the body size before any body frame: a size over the connection's
``max_message_size`` is refused right there (506 ``RESOURCE_ERROR``, the connection closes),
so no peer can make us assemble a body without bound — one comparison per message.

Bodies and properties are slices of the received bytes, kept as they are: properties are
decoded only when read (:class:`~._events.Delivery`), and a body that came in one frame is
never copied again.
"""

from __future__ import annotations

import struct
from typing import Any

from ._channel import ChannelRecord
from ._errors import FRAME_ERROR, RESOURCE_ERROR, UNEXPECTED_FRAME, RemoteProtocolError
from ._events import AMQPEvent, Delivery, Returned
from ._methods import BASIC_CLASS, BASIC_DELIVER, BASIC_GET_OK
from ._state import ChannelState

_content_sizes = struct.Struct(">HHQ")


def announce(ch: ChannelRecord, content: tuple[Any, ...]) -> None:
    """A method announced content on ``ch``: ``(method id, *its fields)``."""
    ch.content = content
    ch.content_remaining = -1


def on_header(
    ch: ChannelRecord,
    data: bytes,
    start: int,
    end: int,
    events: list[AMQPEvent],
    max_size: int,
) -> None:
    """A content header frame (payload ``data[start:end]``) arrived on ``ch``; a body
    announced larger than ``max_size`` bytes is a :class:`RemoteProtocolError`."""
    if ch.state is ChannelState.CLOSING or ch.stale:
        return  # spec 4.2.7: discarded until CloseOk / the previous incarnation's
    if ch.content is None or ch.content_remaining != -1:
        raise RemoteProtocolError(
            f"unexpected content header on channel {ch.number}", UNEXPECTED_FRAME
        )
    if end - start < 14:
        raise RemoteProtocolError("content header frame too short", FRAME_ERROR)
    class_id, _weight, body_size = _content_sizes.unpack_from(data, start)
    if class_id != BASIC_CLASS:
        raise RemoteProtocolError(
            f"content header for class {class_id}, expected 60 (basic)", FRAME_ERROR
        )
    if body_size > max_size:
        raise RemoteProtocolError(
            f"message on channel {ch.number} announces a body of {body_size} bytes, over "
            f"the maximum message size of {max_size} bytes (max_message_size)",
            RESOURCE_ERROR,
        )
    ch.content_size = body_size
    ch.content_remaining = body_size
    ch.content_parts = [data[start + 12 : end]]  # [raw properties, body parts...]
    if body_size == 0:
        _complete(ch, events)


def on_body(ch: ChannelRecord, payload: bytes, events: list[AMQPEvent]) -> None:
    """A content body frame arrived on ``ch``."""
    if ch.state is ChannelState.CLOSING or ch.stale:
        return
    if ch.content is None or ch.content_remaining <= 0:
        raise RemoteProtocolError(
            f"unexpected content body on channel {ch.number}", UNEXPECTED_FRAME
        )
    remaining = ch.content_remaining - len(payload)
    if remaining < 0:
        raise RemoteProtocolError(
            f"content body on channel {ch.number} exceeds the announced {ch.content_size} bytes",
            FRAME_ERROR,
        )
    ch.content_parts.append(payload)
    ch.content_remaining = remaining
    if remaining == 0:
        _complete(ch, events)


def _complete(ch: ChannelRecord, events: list[AMQPEvent]) -> None:
    parts = ch.content_parts
    raw_properties = parts[0]
    body = parts[1] if len(parts) == 2 else b"".join(parts[1:])
    content = ch.content
    assert content is not None
    ch.content = None
    ch.content_parts = []
    kind = content[0]
    if kind == BASIC_DELIVER:
        _, consumer_tag, tag, redelivered, exchange, routing_key = content
        events.append(
            Delivery(
                ch.number,
                consumer_tag,
                tag,
                redelivered,
                exchange,
                routing_key,
                body,
                raw_properties,
            )
        )
    elif kind == BASIC_GET_OK:
        _, tag, redelivered, exchange, routing_key, count = content
        events.append(
            Delivery(
                ch.number,
                None,
                tag,
                bool(redelivered),
                exchange or "",
                routing_key or "",
                body,
                raw_properties,
                message_count=count,
            )
        )
    else:  # BASIC_RETURN
        _, code, text, exchange, routing_key = content
        exchange = exchange or ""
        routing_key = routing_key or ""
        confirms = ch.confirms
        events.append(
            Returned(
                ch.number,
                code or 0,
                text or "",
                exchange,
                routing_key,
                body,
                raw_properties,
                delivery_tag=None
                if confirms is None
                else confirms.match_return(exchange, routing_key),
            )
        )
