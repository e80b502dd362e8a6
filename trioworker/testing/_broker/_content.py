"""A message as the broker holds it, and :class:`StoredMessage`, the view tests read.

The broker keeps a publish's property list as the raw bytes the client sent and hands the
same bytes to every consumer, as RabbitMQ does: what the consumer decodes is what the
publisher encoded, byte for byte. Properties are decoded only when the broker itself must
read them (an ``expiration``, the headers a headers exchange matches, a ``reply_to`` to
rewrite, the ``x-death`` dead-lettering adds) or a test looks at them; a change (dead-
lettering, a quorum queue's ``x-delivery-count``) makes a new :class:`Content` with the
properties encoded again by pamqp, the reference codec.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from pamqp import commands

from ...amqp.protocol import decode_properties
from ._errors import SYNTAX_ERROR, ConnectionError

__all__ = ["Content", "Entry", "StoredMessage", "check_property_list", "copy_properties"]

_header_prefix = struct.Struct(">HHQ")

#: Property flag bits (AMQP 0-9-1 Basic class) the broker tests without decoding.
FLAG_HEADERS = 0x2000
FLAG_EXPIRATION = 0x0100
FLAG_USER_ID = 0x0010

# The property list's value kinds in flag order: shortstr, table, octet, timestamp.
_LAYOUT = (
    (0x8000, "s"),
    (0x4000, "s"),
    (0x2000, "t"),
    (0x1000, "o"),
    (0x0800, "o"),
    (0x0400, "s"),
    (0x0200, "s"),
    (0x0100, "s"),
    (0x0080, "s"),
    (0x0040, "l"),
    (0x0020, "s"),
    (0x0010, "s"),
    (0x0008, "s"),
    (0x0004, "s"),
)


def check_property_list(raw: bytes) -> int:
    """Check that a publish's property list is well formed; return its flags.

    RabbitMQ decodes every publish's properties, so a broken list fails the publish (502
    SYNTAX_ERROR, the connection closes). Walking the lengths costs a few comparisons; the
    values themselves are decoded only when needed.
    """
    size = len(raw)
    if size < 2:
        raise ConnectionError(SYNTAX_ERROR, "content header property flags are truncated")
    flags = (raw[0] << 8) | raw[1]
    if flags & 1:  # a second flag word: no such properties in 0-9-1
        raise ConnectionError(SYNTAX_ERROR, "content header has unknown property flags")
    offset = 2
    for bit, kind in _LAYOUT:
        if not flags & bit:
            continue
        if kind == "s":
            if offset >= size:
                offset = size + 1
                break
            offset += 1 + raw[offset]
        elif kind == "t":
            if offset + 4 > size:
                offset = size + 1
                break
            offset += 4 + int.from_bytes(raw[offset : offset + 4], "big")
        else:
            offset += 1 if kind == "o" else 8
    if offset != size:
        raise ConnectionError(SYNTAX_ERROR, "content header property list does not match its flags")
    return flags


class Content:
    """One published message: where it was published to, its properties, its body.

    Shared by every queue it was routed to (it never changes); per-queue state lives in
    the queue's entries.
    """

    __slots__ = ("_header", "_properties", "body", "exchange", "raw_properties", "routing_key")

    def __init__(self, exchange: str, routing_key: str, raw_properties: bytes, body: bytes):
        self.exchange = exchange
        self.routing_key = routing_key
        self.raw_properties = raw_properties
        self.body = body
        self._properties: commands.Basic.Properties | None = None
        self._header: bytes | None = None

    @property
    def properties(self) -> commands.Basic.Properties:
        """The decoded properties (:class:`~trioworker.amqp.PropertyDecodeError` if they
        cannot be decoded)."""
        props = self._properties
        if props is None:
            props = self._properties = decode_properties(self.raw_properties)
        return props

    def header_payload(self) -> bytes:
        """The content header frame's payload (class, weight, body size, properties)."""
        header = self._header
        if header is None:
            header = self._header = _header_prefix.pack(60, 0, len(self.body)) + self.raw_properties
        return header

    def replace(
        self,
        properties: commands.Basic.Properties,
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> Content:
        """A copy with other properties (and where it was published to)."""
        copy = Content(
            self.exchange if exchange is None else exchange,
            self.routing_key if routing_key is None else routing_key,
            properties.marshal(),
            self.body,
        )
        copy._properties = properties
        return copy


def copy_properties(props: commands.Basic.Properties) -> commands.Basic.Properties:
    """A shallow copy whose headers table can be changed without touching the original."""
    copy = commands.Basic.Properties()
    for name in props.__slots__:
        setattr(copy, name, getattr(props, name))
    if props.headers is not None:
        copy.headers = dict(props.headers)
    return copy


class StoredMessage:
    """A message in the broker (or one it received), as a test inspects it."""

    __slots__ = ("_content", "redelivered")

    def __init__(self, content: Content, redelivered: bool = False) -> None:
        self._content = content
        #: Whether the broker delivered it before (it was requeued).
        self.redelivered = redelivered

    @property
    def body(self) -> bytes:
        return self._content.body

    @property
    def properties(self) -> commands.Basic.Properties:
        """The message's ``Basic.Properties`` (pamqp), decoded."""
        return self._content.properties

    @property
    def headers(self) -> dict[str, Any]:
        """The ``headers`` property (an empty dict when absent)."""
        return dict(self._content.properties.headers or {})

    @property
    def exchange(self) -> str:
        """The exchange it was published (or dead-lettered) to."""
        return self._content.exchange

    @property
    def routing_key(self) -> str:
        """The routing key it was published (or dead-lettered) with."""
        return self._content.routing_key

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self._content.body)

    def __repr__(self) -> str:
        body = self._content.body
        shown = body if len(body) <= 60 else body[:57] + b"..."
        return (
            f"StoredMessage(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"body={shown!r}, redelivered={self.redelivered})"
        )


class Entry:
    """A message in one queue: its place (``seq``), when it expires, whether it was
    delivered before, and how often it came back (a quorum queue's delivery count)."""

    __slots__ = ("content", "expires_at", "redelivered", "returns", "seq")

    def __init__(self, content: Content, seq: int, expires_at: float | None) -> None:
        self.content = content
        self.seq = seq
        self.expires_at = expires_at
        self.redelivered = False
        self.returns = 0
