"""The sans-IO AMQP 0-9-1 protocol core: bytes in, events out; commands in, bytes out.

Nothing here imports trio, sockets or a clock (layering rule 1 of docs/architecture.md),
so every rule can be tested with byte fixtures alone. :mod:`trioworker.amqp` runs it over
trio.
"""

from ._connection import AMQPConnection
from ._errors import (
    AMQPError,
    HeartbeatTimeout,
    LocalProtocolError,
    PropertyDecodeError,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import (
    AMQPEvent,
    BasicProperties,
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    MethodReceived,
    PublishConfirmed,
    Returned,
    decode_properties,
)
from ._handshake import negotiate
from ._state import ChannelState, ConnectionState
from ._stream_offset import UNKNOWN as UNKNOWN_OFFSET
from ._stream_offset import stream_offset_of

__all__ = [
    "UNKNOWN_OFFSET",
    "AMQPConnection",
    "AMQPError",
    "AMQPEvent",
    "BasicProperties",
    "ChannelClosed",
    "ChannelFlow",
    "ChannelOpened",
    "ChannelState",
    "ConnectionBlocked",
    "ConnectionClosed",
    "ConnectionOpened",
    "ConnectionState",
    "ConnectionUnblocked",
    "ConsumerCancelled",
    "Delivery",
    "HeartbeatTimeout",
    "LocalProtocolError",
    "MethodReceived",
    "PropertyDecodeError",
    "ProtocolError",
    "PublishConfirmed",
    "RemoteProtocolError",
    "Returned",
    "decode_properties",
    "negotiate",
    "stream_offset_of",
]
