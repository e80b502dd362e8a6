"""Connection and channel states, and the tables of what the peer may send in each.

Every rule about *which method may arrive when* lives here, as data: one row per state,
mapping a method id (:mod:`._methods`) to the state it leads to. What a method *does*
(the reply it makes the core queue, the event it produces) lives with its handler
(:mod:`._receive` for channel 0, :mod:`._channel_methods` for the others); whether it is
allowed, and where it leads, is only looked up here. A method missing from its state's
row is a protocol violation (505 ``UNEXPECTED_FRAME``) — except in a state that discards,
where the spec says to drop frames while a close handshake runs (4.2.7: "the peer that
sends Close must discard frames until CloseOk").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from ._errors import UNEXPECTED_FRAME, RemoteProtocolError
from ._methods import (
    BASIC_ACK,
    BASIC_CANCEL,
    BASIC_DELIVER,
    BASIC_NACK,
    BASIC_RETURN,
    CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK,
    CHANNEL_FLOW,
    CHANNEL_OPEN_OK,
    CONNECTION_BLOCKED,
    CONNECTION_CLOSE,
    CONNECTION_CLOSE_OK,
    CONNECTION_OPEN_OK,
    CONNECTION_SECURE,
    CONNECTION_START,
    CONNECTION_TUNE,
    CONNECTION_UNBLOCKED,
)


class ConnectionState(enum.Enum):
    """Where the connection is in its life (spec 2.2.4)."""

    IDLE = "idle"  #: nothing sent yet
    AWAIT_START = "await_start"  #: protocol header sent
    AWAIT_TUNE = "await_tune"  #: StartOk sent
    AWAIT_OPEN_OK = "await_open_ok"  #: TuneOk + Open sent
    OPEN = "open"
    CLOSING = "closing"  #: we sent Connection.Close, waiting for CloseOk
    CLOSED = "closed"
    ERROR = "error"  #: sticky: a protocol error happened


class ChannelState(enum.Enum):
    """Where one channel is in its life."""

    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"  #: we sent Channel.Close; the peer's frames are dropped


class Marker(enum.Enum):
    """Markers a table row can map a method to instead of a state."""

    #: The channel number is free again (the channel is gone).
    FREED = "freed"
    #: Stand-in key for "the reply the outstanding synchronous request awaits": the
    #: protocol allows one synchronous request in flight per channel (spec 2.2.2), and
    #: which replies it allows is pamqp's ``valid_responses`` for it, kept per channel.
    REPLY = "reply"


FREED: Final = Marker.FREED
REPLY: Final = Marker.REPLY

_C = ConnectionState

#: Methods the broker may send on channel 0, and the connection state each leads to.
#:
#: The handshake is a fixed sequence (spec 2.2.4): Start is answered by StartOk, Tune by
#: TuneOk + Open, and OpenOk ends it. We answer Start with PLAIN credentials, so a Secure
#: challenge (which can only follow StartOk) is refused by its handler (540). The broker may close
#: the connection at any point, even mid-handshake (a refused login is a Close). Blocked
#: and Unblocked (RabbitMQ's resource alarms) come only once the connection is open.
CONNECTION_TRANSITIONS: Final[Mapping[ConnectionState, Mapping[int, ConnectionState]]] = {
    _C.IDLE: {CONNECTION_CLOSE: _C.CLOSED},
    _C.AWAIT_START: {CONNECTION_START: _C.AWAIT_TUNE, CONNECTION_CLOSE: _C.CLOSED},
    _C.AWAIT_TUNE: {
        CONNECTION_TUNE: _C.AWAIT_OPEN_OK,
        CONNECTION_SECURE: _C.AWAIT_TUNE,
        CONNECTION_CLOSE: _C.CLOSED,
    },
    _C.AWAIT_OPEN_OK: {CONNECTION_OPEN_OK: _C.OPEN, CONNECTION_CLOSE: _C.CLOSED},
    _C.OPEN: {
        CONNECTION_BLOCKED: _C.OPEN,
        CONNECTION_UNBLOCKED: _C.OPEN,
        CONNECTION_CLOSE: _C.CLOSED,
    },
    # Both sides may close at once: the broker's Close is answered even while we wait.
    _C.CLOSING: {CONNECTION_CLOSE_OK: _C.CLOSED, CONNECTION_CLOSE: _C.CLOSED},
    _C.CLOSED: {},
    _C.ERROR: {},
}

_Ch = ChannelState

#: Methods the broker may send on a channel, and the channel state each leads to
#: (:data:`FREED`: the number is free again).
#:
#: The broker may close a channel in any state (a failed declare closes it). Until
#: ``OpenOk`` nothing but the close can arrive. Once open, the broker sends deliveries,
#: confirms, returns, consumer cancels and flow requests unprompted, and the reply to the
#: request outstanding (:data:`REPLY`). Deliver, Ack and Nack in ``OPEN`` are recognised by
#: the parse loop itself (the hot path) and decoded by hand; every other method comes
#: through pamqp to this table.
CHANNEL_TRANSITIONS: Final[Mapping[ChannelState, Mapping[int | Marker, ChannelState | Marker]]] = {
    _Ch.OPENING: {CHANNEL_OPEN_OK: _Ch.OPEN, CHANNEL_CLOSE: FREED},
    _Ch.OPEN: {
        BASIC_DELIVER: _Ch.OPEN,
        BASIC_ACK: _Ch.OPEN,
        BASIC_NACK: _Ch.OPEN,
        BASIC_RETURN: _Ch.OPEN,
        BASIC_CANCEL: _Ch.OPEN,
        CHANNEL_FLOW: _Ch.OPEN,
        REPLY: _Ch.OPEN,
        CHANNEL_CLOSE: FREED,
    },
    # Both sides closed at once: the broker's Close is answered and frees the number too.
    _Ch.CLOSING: {CHANNEL_CLOSE_OK: FREED, CHANNEL_CLOSE: FREED},
}

#: States whose unlisted methods are dropped rather than refused (spec 4.2.7).
DISCARDING: Final = frozenset({ConnectionState.CLOSING, ChannelState.CLOSING})


def connection_transition(state: ConnectionState, index: int, name: str) -> ConnectionState | None:
    """The state a channel-0 method leads to, or ``None`` if it is to be discarded.

    Raises :class:`RemoteProtocolError` (505) for a method the state does not allow.
    """
    target = CONNECTION_TRANSITIONS[state].get(index)
    if target is None and state not in DISCARDING:
        raise RemoteProtocolError(
            f"unexpected {name} on channel 0 in state {state.value}", UNEXPECTED_FRAME
        )
    return target


def channel_transition(
    state: ChannelState, index: int, name: str, number: int, *, awaited: bool, stale: bool
) -> ChannelState | Marker | None:
    """The state a method on a channel leads to, or ``None`` if it is to be discarded.

    ``awaited``: the method is a reply the channel's outstanding synchronous request
    allows. ``stale``: the number was reopened after the broker closed it, and until its
    ``OpenOk`` a frame the row does not list is taken for one of the previous incarnation
    (still on its way when the broker closed it) and discarded. Raises
    :class:`RemoteProtocolError` (505) for a method the state does not allow.
    """
    row = CHANNEL_TRANSITIONS[state]
    target = row.get(index)
    if target is None and awaited:
        target = row.get(REPLY)
    if target is None and not stale and state not in DISCARDING:
        if state is ChannelState.OPENING:
            raise RemoteProtocolError(
                f"{name} on channel {number} before Channel.OpenOk", UNEXPECTED_FRAME
            )
        raise RemoteProtocolError(f"unexpected {name} on channel {number}", UNEXPECTED_FRAME)
    return target
