"""Events produced by :meth:`AMQPConnection.receive_data`; :data:`AMQPEvent` is their union.

Events that never change are frozen, slotted dataclasses. The two that carry a message,
:class:`Delivery` and :class:`Returned`, are hand-written slotted classes instead: the
consume path creates one :class:`Delivery` per message, and a frozen dataclass's
``__init__`` (one ``object.__setattr__`` per field) costs about three times as much; and
their properties stay as raw bytes until first read, then are cached on the event (see
:class:`PropertyDecodeError` for why), which a frozen instance could not do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

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


@dataclass(slots=True, frozen=True)
class ConnectionOpened:
    """``Connection.OpenOk`` arrived: the handshake is over, channels may be opened."""

    server_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int


@dataclass(slots=True, frozen=True)
class ConnectionClosed:
    """The connection closed: by the peer's ``Connection.Close``, or our close completed."""

    reply_code: int
    reply_text: str
    by_peer: bool
    class_id: int = 0
    method_id: int = 0


@dataclass(slots=True, frozen=True)
class ConnectionBlocked:
    """The broker stopped reading publishes (memory or disk alarm)."""

    reason: str


@dataclass(slots=True, frozen=True)
class ConnectionUnblocked:
    """The broker resumed reading publishes."""


@dataclass(slots=True, frozen=True)
class ChannelOpened:
    """``Channel.OpenOk`` arrived for ``channel``."""

    channel: int


@dataclass(slots=True, frozen=True)
class ChannelClosed:
    """``channel`` is closed; its number may be reused from now on."""

    channel: int
    reply_code: int
    reply_text: str
    by_peer: bool
    class_id: int = 0
    method_id: int = 0


@dataclass(slots=True, frozen=True)
class ChannelFlow:
    """The broker asked to pause (``active=False``) or resume content on ``channel``."""

    channel: int
    active: bool


@dataclass(slots=True, frozen=True)
class MethodReceived:
    """The reply to the synchronous request outstanding on ``channel``."""

    channel: int
    method: base.Frame


@dataclass(slots=True, frozen=True)
class ConsumerCancelled:
    """The broker cancelled a consumer (queue deleted, node down): ``Basic.Cancel``."""

    channel: int
    consumer_tag: str


@dataclass(slots=True, frozen=True, init=False)
class PublishConfirmed:
    """Publisher confirms for ``delivery_tags`` (ascending): ``ack`` or nack.

    A multiple-ack is resolved by the core against its deque of outstanding tags, so every
    tag appears in exactly one event, whatever mix of single and multiple acks the broker
    sends.
    """

    channel: int
    delivery_tags: list[int]
    ack: bool

    def __init__(self, channel: int, delivery_tags: list[int], ack: bool) -> None:
        # One per confirm frame: a publisher's hot path. The generated frozen __init__
        # goes through object.__setattr__ per field (about 3x the cost); setting the slots
        # through their descriptors is as fast as a plain class and still frozen after.
        _set_channel(self, channel)
        _set_delivery_tags(self, delivery_tags)
        _set_ack(self, ack)


_set_channel = PublishConfirmed.__dict__["channel"].__set__
_set_delivery_tags = PublishConfirmed.__dict__["delivery_tags"].__set__
_set_ack = PublishConfirmed.__dict__["ack"].__set__


class _Content:
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

    def __repr__(self) -> str:
        names = [
            name
            for cls in type(self).__mro__
            for name in getattr(cls, "__slots__", ())
            if not name.startswith("_")
        ]
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"


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


#: Everything :meth:`AMQPConnection.receive_data` returns.
AMQPEvent: TypeAlias = (
    ConnectionOpened
    | ConnectionClosed
    | ConnectionBlocked
    | ConnectionUnblocked
    | ChannelOpened
    | ChannelClosed
    | ChannelFlow
    | MethodReceived
    | ConsumerCancelled
    | PublishConfirmed
    | Delivery
    | Returned
)
