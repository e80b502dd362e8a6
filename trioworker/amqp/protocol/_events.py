"""Events produced by :meth:`AMQPConnection.receive_data`.

Each event is a small slotted class: the consume path creates one :class:`Delivery` per
message, so construction cost matters more than elegance here. Message properties stay as
raw bytes until first read (see :class:`PropertyDecodeError` for why).
"""

from __future__ import annotations

from typing import Any

from pamqp import base, commands

from ._errors import PropertyDecodeError

BasicProperties = commands.Basic.Properties


# The property list's value types in flag order, bit 15 first (AMQP 0-9-1, Basic class):
# "s" shortstr (1-byte length), "t" field table (4-byte length), "o" octet, "l" timestamp.
_PROPERTY_LAYOUT = (
    (0x8000, "s"),  # content_type
    (0x4000, "s"),  # content_encoding
    (0x2000, "t"),  # headers
    (0x1000, "o"),  # delivery_mode
    (0x0800, "o"),  # priority
    (0x0400, "s"),  # correlation_id
    (0x0200, "s"),  # reply_to
    (0x0100, "s"),  # expiration
    (0x0080, "s"),  # message_id
    (0x0040, "l"),  # timestamp
    (0x0020, "s"),  # type
    (0x0010, "s"),  # user_id
    (0x0008, "s"),  # app_id
    (0x0004, "s"),  # cluster_id
)


def _check_property_list_size(flags: int, data: bytes) -> None:
    """Walk the flagged values' lengths and require them to fill ``data`` exactly.

    pamqp slices its input, and a slice past the end is silently shorter: a truncated
    property list would decode into a cut-off ``reply_to`` (say) and the reply would go to
    the wrong queue. Walking the lengths first turns that into a decode error, and so does
    data left over after the last value.
    """
    offset = 0
    size = len(data)
    for bit, kind in _PROPERTY_LAYOUT:
        if not flags & bit:
            continue
        if kind == "s":
            if offset >= size:
                raise ValueError(f"property list is truncated at byte {offset}")
            offset += 1 + data[offset]
        elif kind == "t":
            if offset + 4 > size:
                raise ValueError(f"property list is truncated at byte {offset}")
            offset += 4 + int.from_bytes(data[offset : offset + 4], "big")
        else:
            offset += 1 if kind == "o" else 8
        if offset > size:
            raise ValueError(f"property list needs {offset} bytes, has {size}")
    if offset != size:
        raise ValueError(f"property list has {size - offset} bytes after its last value")


def decode_properties(raw: bytes) -> BasicProperties:
    """Decode a content header's property list (flags + values).

    Any failure — truncated data, bytes left over, bad UTF-8, a timestamp out of
    ``datetime``'s range (pamqp raises ``OverflowError`` for those) — becomes
    :class:`PropertyDecodeError`.
    """
    props = BasicProperties()
    if raw == b"\x00\x00":
        return props
    try:
        flags = 0
        offset = 0
        word = 0
        while True:
            if len(raw) < offset + 2:
                raise ValueError("property flags are truncated")
            partial = (raw[offset] << 8) | raw[offset + 1]
            offset += 2
            flags |= (partial & 0xFFFE) << (word * 16)
            if not partial & 1:
                break
            word += 1
        values = raw[offset:]
        _check_property_list_size(flags, values)
        props.unmarshal(flags, values)
    except Exception as exc:  # pamqp raises ValueError, struct.error, OverflowError, ...
        raise PropertyDecodeError(f"undecodable message properties: {exc!r}") from exc
    return props


class Event:
    """Base class of everything :meth:`AMQPConnection.receive_data` returns."""

    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _public_slots(self))
        return f"{type(self).__name__}({fields})"


def _public_slots(obj: object) -> list[str]:
    names: list[str] = []
    for cls in type(obj).__mro__:
        names.extend(s for s in getattr(cls, "__slots__", ()) if not s.startswith("_"))
    return names


class ConnectionOpened(Event):
    """``Connection.OpenOk`` arrived: the handshake is over, channels may be opened."""

    __slots__ = ("channel_max", "frame_max", "heartbeat", "server_properties")

    def __init__(
        self, server_properties: dict[str, Any], channel_max: int, frame_max: int, heartbeat: int
    ) -> None:
        self.server_properties = server_properties
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat = heartbeat


class ConnectionClosed(Event):
    """The connection closed: by the peer's ``Connection.Close``, or our close completed."""

    __slots__ = ("by_peer", "class_id", "method_id", "reply_code", "reply_text")

    def __init__(
        self,
        reply_code: int,
        reply_text: str,
        by_peer: bool,
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.by_peer = by_peer
        self.class_id = class_id
        self.method_id = method_id


class ConnectionBlocked(Event):
    """The broker stopped reading publishes (memory or disk alarm)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class ConnectionUnblocked(Event):
    """The broker resumed reading publishes."""

    __slots__ = ()


class ChannelOpened(Event):
    """``Channel.OpenOk`` arrived for ``channel``."""

    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class ChannelClosed(Event):
    """``channel`` is closed; its number may be reused from now on."""

    __slots__ = ("by_peer", "channel", "class_id", "method_id", "reply_code", "reply_text")

    def __init__(
        self,
        channel: int,
        reply_code: int,
        reply_text: str,
        by_peer: bool,
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.by_peer = by_peer
        self.class_id = class_id
        self.method_id = method_id


class ChannelFlow(Event):
    """The broker asked to pause (``active=False``) or resume content on ``channel``."""

    __slots__ = ("active", "channel")

    def __init__(self, channel: int, active: bool) -> None:
        self.channel = channel
        self.active = active


class MethodReceived(Event):
    """The reply to the synchronous request outstanding on ``channel``."""

    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: base.Frame) -> None:
        self.channel = channel
        self.method = method


class ConsumerCancelled(Event):
    """The broker cancelled a consumer (queue deleted, node down): ``Basic.Cancel``."""

    __slots__ = ("channel", "consumer_tag")

    def __init__(self, channel: int, consumer_tag: str) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag


class PublishConfirmed(Event):
    """Publisher confirms for ``delivery_tags`` (ascending): ``ack`` or nack.

    A multiple-ack is resolved by the core against its deque of outstanding tags, so every
    tag appears in exactly one event, whatever mix of single and multiple acks the broker
    sends.
    """

    __slots__ = ("ack", "channel", "delivery_tags")

    def __init__(self, channel: int, delivery_tags: list[int], ack: bool) -> None:
        self.channel = channel
        self.delivery_tags = delivery_tags
        self.ack = ack


class _Content(Event):
    """A message with lazily decoded properties."""

    __slots__ = ("_properties", "_raw_properties", "body", "channel", "exchange", "routing_key")

    channel: int
    exchange: str
    routing_key: str
    body: bytes
    _raw_properties: bytes
    _properties: BasicProperties | None

    @property
    def properties(self) -> BasicProperties:
        """The message's ``Basic.Properties``, decoded on first access.

        Raises :class:`PropertyDecodeError` if they cannot be decoded.
        """
        props = self._properties
        if props is None:
            props = self._properties = decode_properties(self._raw_properties)
        return props

    @property
    def raw_properties(self) -> bytes:
        """The undecoded property flags and list, exactly as received."""
        return self._raw_properties


class Delivery(_Content):
    """A message from ``Basic.Deliver`` (a consumer) or ``Basic.GetOk``.

    For ``GetOk``, ``consumer_tag`` is ``None`` and ``message_count`` is set.
    """

    __slots__ = ("consumer_tag", "delivery_tag", "message_count", "redelivered")

    def __init__(
        self,
        channel: int,
        consumer_tag: str | None,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        body: bytes,
        raw_properties: bytes,
        message_count: int | None = None,
    ) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self._raw_properties = raw_properties
        self._properties = None
        self.message_count = message_count


class Returned(_Content):
    """A mandatory message the broker could not route (``Basic.Return``).

    ``delivery_tag`` is the publish sequence number of the returned message when the
    channel is in confirm mode (the core matches it), else ``None``.
    """

    __slots__ = ("delivery_tag", "reply_code", "reply_text")

    def __init__(
        self,
        channel: int,
        reply_code: int,
        reply_text: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        raw_properties: bytes,
        delivery_tag: int | None = None,
    ) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self._raw_properties = raw_properties
        self._properties = None
        self.delivery_tag = delivery_tag
