"""Frame encoding and decoding.

pamqp is the reference codec and handles every frame. The few frames on the hot paths —
``Basic.Publish``/content header/body going out, ``Basic.Deliver``/``Basic.Ack`` coming in,
acks and rejects going out — are hand-encoded here because pamqp's generic, attribute-driven
(un)marshalling dominated consume time in profiles. tests/amqp/protocol/test_frames.py proves
every function here byte-for-byte equal to pamqp on generated inputs.

Frame layout (AMQP 0-9-1 section 2.3.5)::

    type:octet  channel:short  size:long  payload:size octets  frame-end:0xCE
"""

from __future__ import annotations

import struct

from pamqp import base, commands
from pamqp import encode as pamqp_encode
from pamqp import exceptions as pamqp_exceptions
from pamqp import frame as pamqp_frame

from ._errors import FRAME_ERROR, LocalProtocolError, RemoteProtocolError
from ._methods import BASIC_ACK, BASIC_NACK, BASIC_REJECT

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_HEADER_SIZE = 7
#: Bytes a frame adds around its payload: the 7-byte header and the end octet.
FRAME_OVERHEAD = FRAME_HEADER_SIZE + 1

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
EMPTY_PROPERTIES = b"\x00\x00"

#: Unpacks a frame header: ``(type, channel, payload size)``.
frame_header = struct.Struct(">BHI")
#: Unpacks the method id at the start of a method frame's payload (see :mod:`._methods`).
method_index = struct.Struct(">I")
_method_header = struct.Struct(">BHII")  # frame header + class/method index
_content_header = struct.Struct(">BHIHHQ")
_ack = struct.Struct(">BHIIQB")
_tag_and_bits = struct.Struct(">QB")
_octet = struct.Struct(">B")
_flags = struct.Struct(">H")


def encode_method(channel: int, method: base.Frame) -> bytes:
    """Encode any method frame through pamqp (the reference codec)."""
    return pamqp_frame.marshal(method, channel)


def _shortstr(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise LocalProtocolError(f"{what} is longer than 255 bytes once UTF-8 encoded")
    return bytes((len(raw),)) + raw


def encode_publish(
    channel: int, exchange: str, routing_key: str, mandatory: bool, immediate: bool
) -> bytes:
    """Encode a ``Basic.Publish`` method frame (ticket 0)."""
    payload = (
        b"\x00\x3c\x00\x28\x00\x00"
        + _shortstr(exchange, "exchange")
        + _shortstr(routing_key, "routing_key")
        + (
            b"\x03"
            if mandatory and immediate
            else b"\x01"
            if mandatory
            else b"\x02"
            if immediate
            else b"\x00"
        )
    )
    return frame_header.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


def encode_properties(properties: commands.Basic.Properties | None) -> bytes:
    """Encode a property list (flags + values); ``None`` means no properties.

    Same bytes as pamqp's ``Properties.marshal()``: a property is present when it is
    neither ``None`` nor ``""``; values follow in flag order. Tables and timestamps go
    through pamqp's encoders, the short strings and octets are done here.
    """
    if properties is None:
        return EMPTY_PROPERTIES
    p = properties
    flags = 0
    parts: list[bytes] = []
    try:
        if (v := p.content_type) is not None and v != "":
            flags |= 0x8000
            parts.append(_shortstr(v, "content_type"))
        if (v := p.content_encoding) is not None and v != "":
            flags |= 0x4000
            parts.append(_shortstr(v, "content_encoding"))
        if (h := p.headers) is not None:
            flags |= 0x2000
            parts.append(pamqp_encode.field_table(h))
        if (n := p.delivery_mode) is not None:
            flags |= 0x1000
            parts.append(_octet.pack(n))
        if (n := p.priority) is not None:
            flags |= 0x0800
            parts.append(_octet.pack(n))
        if (v := p.correlation_id) is not None and v != "":
            flags |= 0x0400
            parts.append(_shortstr(v, "correlation_id"))
        if (v := p.reply_to) is not None and v != "":
            flags |= 0x0200
            parts.append(_shortstr(v, "reply_to"))
        if (v := p.expiration) is not None and v != "":
            flags |= 0x0100
            parts.append(_shortstr(v, "expiration"))
        if (v := p.message_id) is not None and v != "":
            flags |= 0x0080
            parts.append(_shortstr(v, "message_id"))
        if (t := p.timestamp) is not None and t != "":
            flags |= 0x0040
            parts.append(pamqp_encode.timestamp(t))
        if (v := p.message_type) is not None and v != "":
            flags |= 0x0020
            parts.append(_shortstr(v, "message_type"))
        if (v := p.user_id) is not None and v != "":
            flags |= 0x0010
            parts.append(_shortstr(v, "user_id"))
        if (v := p.app_id) is not None and v != "":
            flags |= 0x0008
            parts.append(_shortstr(v, "app_id"))
        if (v := p.cluster_id) is not None and v != "":
            flags |= 0x0004
            parts.append(_shortstr(v, "cluster_id"))
    except LocalProtocolError:
        raise
    except (TypeError, ValueError, struct.error, AttributeError) as exc:
        raise LocalProtocolError(f"cannot encode message properties: {exc}") from exc
    return _flags.pack(flags) + b"".join(parts)


def encode_content_header(channel: int, body_size: int, raw_properties: bytes) -> bytes:
    """Encode a ``Basic`` content header frame around already-encoded properties."""
    return (
        _content_header.pack(FRAME_HEADER, channel, 12 + len(raw_properties), 60, 0, body_size)
        + raw_properties
        + FRAME_END_BYTE
    )


def encode_body(channel: int, body: bytes, max_payload: int) -> list[bytes]:
    """Split ``body`` into body frames of at most ``max_payload`` (frame_max - 8) bytes.

    An empty body needs no body frame at all: the header already says its size is 0.
    """
    size = len(body)
    if size <= max_payload:
        if not size:
            return []
        return [frame_header.pack(FRAME_BODY, channel, size) + body + FRAME_END_BYTE]
    view = memoryview(body)
    frames = []
    for start in range(0, size, max_payload):
        chunk = view[start : start + max_payload]
        frames.append(
            frame_header.pack(FRAME_BODY, channel, len(chunk)) + bytes(chunk) + FRAME_END_BYTE
        )
    return frames


def encode_basic_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """Encode ``Basic.Ack`` (client → broker: consumer acknowledgement)."""
    return _ack.pack(FRAME_METHOD, channel, 13, BASIC_ACK, delivery_tag, multiple) + FRAME_END_BYTE


def encode_basic_nack(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> bytes:
    """Encode ``Basic.Nack``; ``multiple`` is bit 0 and ``requeue`` bit 1."""
    bits = (1 if multiple else 0) | (2 if requeue else 0)
    return _ack.pack(FRAME_METHOD, channel, 13, BASIC_NACK, delivery_tag, bits) + FRAME_END_BYTE


def encode_basic_reject(channel: int, delivery_tag: int, requeue: bool) -> bytes:
    """Encode ``Basic.Reject`` (class 60, method 90)."""
    return (
        _ack.pack(FRAME_METHOD, channel, 13, BASIC_REJECT, delivery_tag, 1 if requeue else 0)
        + FRAME_END_BYTE
    )


def decode_method(data: bytes, pos: int, next_pos: int) -> base.Frame:
    """Decode the method frame in ``data[pos:next_pos]`` (header and end octet included)
    through pamqp; any failure is the peer's: :class:`RemoteProtocolError` (501)."""
    try:
        _, _, method = pamqp_frame.unmarshal(data[pos:next_pos])
    except (pamqp_exceptions.UnmarshalingException, ValueError, struct.error) as exc:
        raise RemoteProtocolError(f"malformed method frame: {exc}", FRAME_ERROR) from exc
    except Exception as exc:  # pamqp can raise OverflowError, KeyError, ... on garbage
        raise RemoteProtocolError(f"malformed method frame: {exc!r}", FRAME_ERROR) from exc
    if not isinstance(method, base.Frame):
        raise RemoteProtocolError("expected a method frame", FRAME_ERROR)
    return method


def decode_deliver(data: bytes, start: int, end: int) -> tuple[str, int, bool, str, str]:
    """Decode a ``Basic.Deliver`` payload in ``data[start:end]`` (after the method index).

    Returns ``(consumer_tag, delivery_tag, redelivered, exchange, routing_key)``.
    Raises :class:`RemoteProtocolError` if the fields do not exactly fill the payload.
    """
    try:
        pos = start
        length = data[pos]
        consumer_tag = data[pos + 1 : pos + 1 + length].decode("utf-8")
        pos += 1 + length
        delivery_tag, bits = _tag_and_bits.unpack_from(data, pos)
        pos += 9
        length = data[pos]
        exchange = data[pos + 1 : pos + 1 + length].decode("utf-8")
        pos += 1 + length
        length = data[pos]
        routing_key = data[pos + 1 : pos + 1 + length].decode("utf-8")
        pos += 1 + length
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"malformed Basic.Deliver: {exc}", FRAME_ERROR) from exc
    if pos != end:
        raise RemoteProtocolError("malformed Basic.Deliver: field sizes disagree", FRAME_ERROR)
    return consumer_tag, delivery_tag, bool(bits & 1), exchange, routing_key


def decode_confirm(data: bytes, start: int, end: int) -> tuple[int, int]:
    """Decode a ``Basic.Ack``/``Basic.Nack`` payload: ``(delivery_tag, bits)``."""
    if end - start != 9:
        raise RemoteProtocolError("malformed Basic.Ack/Nack: wrong size", FRAME_ERROR)
    tag, bits = _tag_and_bits.unpack_from(data, start)
    return tag, bits
