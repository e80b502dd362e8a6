"""The broker's frame codec: pamqp for every method, by hand for the per-message ones.

pamqp is the reference codec (design rule 2). The frames each message costs — the
client's ``Basic.Publish`` and ``Basic.Ack``/``Nack``/``Reject`` coming in; ``Basic.
Deliver``, ``Basic.GetOk``, ``Basic.Return``, the content header and body frames and
publisher confirms going out — are done here with :mod:`struct`, because pamqp's
attribute-driven codec would dominate the broker's time per message. They are tested
byte for byte against pamqp on generated inputs (tests/testing/broker/test_frames.py).

Frame layout (AMQP 0-9-1 section 2.3.5)::

    type:octet  channel:short  size:long  payload:size octets  frame-end:0xCE
"""

from __future__ import annotations

import struct

from pamqp import base
from pamqp import exceptions as pamqp_exceptions
from pamqp import frame as pamqp_frame

from ._content import Content
from ._errors import FRAME_ERROR, SYNTAX_ERROR, ConnectionError

__all__ = [
    "FRAME_BODY",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "HEARTBEAT",
    "PROTOCOL_HEADER",
    "decode_method",
    "encode_method",
]

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_OVERHEAD = 8
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"

BASIC_PUBLISH = 0x003C0028
BASIC_ACK = 0x003C0050
BASIC_REJECT = 0x003C005A
BASIC_NACK = 0x003C0078

frame_header = struct.Struct(">BHI")
method_index = struct.Struct(">I")
_tag_and_bits = struct.Struct(">QB")
_deliver_tag = struct.Struct(">QB")
_get_ok_count = struct.Struct(">I")
_confirm = struct.Struct(">BHIIQB")
_return_code = struct.Struct(">IH")
_END = b"\xce"


def encode_method(channel: int, method: base.Frame) -> bytes:
    """Any method frame, through pamqp."""
    return pamqp_frame.marshal(method, channel)


def decode_method(data: bytes) -> base.Frame:
    """Decode one method frame (header and end octet included) through pamqp.

    Undecodable arguments are the client's syntax error (502); the connection closes.
    """
    try:
        _, _, method = pamqp_frame.unmarshal(data)
    except pamqp_exceptions.UnmarshalingException as exc:
        if "Unknown method index" in str(exc):
            raise ConnectionError(
                SYNTAX_ERROR, f"unknown method {method_index.unpack_from(data, 7)[0]:#010x}"
            ) from None
        raise ConnectionError(SYNTAX_ERROR, f"malformed method frame: {exc}") from None
    except Exception as exc:  # pamqp raises struct.error, UnicodeDecodeError, ... on garbage
        raise ConnectionError(SYNTAX_ERROR, f"malformed method frame: {exc!r}") from None
    if not isinstance(method, base.Frame):
        raise ConnectionError(FRAME_ERROR, "expected a method frame")
    return method


def _shortstr(data: bytes, pos: int) -> tuple[str, int]:
    length = data[pos]
    end = pos + 1 + length
    if end > len(data):
        raise IndexError("short string runs past the frame")
    return data[pos + 1 : end].decode("utf-8"), end


def decode_publish(data: bytes, start: int, end: int) -> tuple[str, str, bool, bool]:
    """A ``Basic.Publish`` payload after its method id: ``(exchange, routing_key,
    mandatory, immediate)``; 502 if its fields do not exactly fill it."""
    try:
        pos = start + 2  # the deprecated ticket
        exchange, pos = _shortstr(data, pos)
        routing_key, pos = _shortstr(data, pos)
        bits = data[pos]
        pos += 1
    except (IndexError, UnicodeDecodeError) as exc:
        raise ConnectionError(SYNTAX_ERROR, f"malformed basic.publish: {exc}") from None
    if pos != end:
        raise ConnectionError(SYNTAX_ERROR, "malformed basic.publish: field sizes disagree")
    return exchange, routing_key, bool(bits & 1), bool(bits & 2)


def decode_settle(data: bytes, start: int, end: int) -> tuple[int, int]:
    """A ``Basic.Ack``/``Nack``/``Reject`` payload after its method id: ``(tag, bits)``."""
    if end - start != 9:
        raise ConnectionError(SYNTAX_ERROR, "malformed basic.ack/nack/reject: wrong size")
    tag, bits = _tag_and_bits.unpack_from(data, start)
    return tag, bits


def _method_frame(channel: int, payload: bytes) -> bytes:
    return frame_header.pack(FRAME_METHOD, channel, len(payload)) + payload + _END


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return bytes((len(raw),)) + raw


def encode_deliver(
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
) -> bytes:
    """``Basic.Deliver``; ``consumer_tag`` already encoded as a short string."""
    return _method_frame(
        channel,
        b"\x00\x3c\x00\x3c"
        + consumer_tag
        + _deliver_tag.pack(delivery_tag, 1 if redelivered else 0)
        + _str(exchange)
        + _str(routing_key),
    )


def encode_get_ok(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
) -> bytes:
    """``Basic.GetOk``."""
    return _method_frame(
        channel,
        b"\x00\x3c\x00\x47"
        + _deliver_tag.pack(delivery_tag, 1 if redelivered else 0)
        + _str(exchange)
        + _str(routing_key)
        + _get_ok_count.pack(message_count),
    )


def encode_return(
    channel: int, reply_code: int, reply_text: str, exchange: str, routing_key: str
) -> bytes:
    """``Basic.Return``."""
    return _method_frame(
        channel,
        b"\x00\x3c\x00\x32"
        + reply_code.to_bytes(2, "big")
        + _str(reply_text)
        + _str(exchange)
        + _str(routing_key),
    )


def encode_confirm(channel: int, delivery_tag: int, multiple: bool, ack: bool) -> bytes:
    """A publisher confirm: ``Basic.Ack`` (or ``Basic.Nack``, requeue off) from the broker."""
    return (
        _confirm.pack(
            FRAME_METHOD,
            channel,
            13,
            BASIC_ACK if ack else BASIC_NACK,
            delivery_tag,
            1 if multiple else 0,
        )
        + _END
    )


def encode_content(channel: int, content: Content, frame_max: int) -> bytes:
    """The content header frame and the body frames (split at ``frame_max - 8``)."""
    header = content.header_payload()
    body = content.body
    size = len(body)
    out = frame_header.pack(FRAME_HEADER, channel, len(header)) + header + _END
    if not size:
        return out
    limit = frame_max - FRAME_OVERHEAD
    if size <= limit:
        return out + frame_header.pack(FRAME_BODY, channel, size) + body + _END
    parts = [out]
    view = memoryview(body)
    for start in range(0, size, limit):
        chunk = view[start : start + limit]
        parts.append(frame_header.pack(FRAME_BODY, channel, len(chunk)))
        parts.append(bytes(chunk))
        parts.append(_END)
    return b"".join(parts)
