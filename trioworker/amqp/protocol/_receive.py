"""The receiving half of :class:`~._connection.AMQPConnection`: bytes in, events out.

The parse loop cuts the byte stream into frames and routes each by type and channel. Its
rules, each for a protocol reason:

* Framing: the 7-byte header, the payload size, the 0xCE end octet. A frame bigger than
  the negotiated ``frame_max`` is refused *before* its payload arrives, so a hostile or
  broken peer cannot make us buffer without bound. A wrong end octet means we lost the
  frame boundaries: nothing after it can be trusted (501 ``FRAME_ERROR``).
* The consume hot path — ``Basic.Deliver`` and the content frames after it, publisher
  confirms — is recognised by its method id and decoded by hand (:mod:`._frames`); every
  other method is decoded by pamqp and looked up in the state tables (:mod:`._state`),
  which say whether it may arrive now and which state it leads to. The handlers below say
  what it does.
* Replies the protocol mandates are queued here, not by the caller: ``Connection.CloseOk``
  and ``Channel.CloseOk`` (a peer waits for them), ``Basic.CancelOk`` for a broker cancel
  that asks for one, ``Channel.FlowOk``.
* Channel numbers: a channel we are closing keeps its number until ``CloseOk`` arrives,
  and every frame the peer sends on it meanwhile is dropped (spec 4.2.7: "the peer that
  sends Close must discard frames until CloseOk").
* Errors are sticky: after a :class:`RemoteProtocolError` every call re-raises it, as the
  byte stream can no longer be trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import base, commands

from . import _content
from ._channel import ChannelRecord
from ._channel_methods import receive_channel_method
from ._errors import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    FRAME_ERROR,
    UNEXPECTED_FRAME,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import (
    AMQPEvent,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionUnblocked,
    PublishConfirmed,
)
from ._frames import (
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    decode_confirm,
    decode_deliver,
    decode_method,
    encode_method,
    frame_header,
    method_index,
)
from ._handshake import refuse_secure, start_ok, tune_ok
from ._methods import (
    BASIC_ACK,
    BASIC_DELIVER,
    BASIC_NACK,
    CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK,
    CONNECTION_BLOCKED,
    CONNECTION_CLOSE,
    CONNECTION_CLOSE_OK,
    CONNECTION_OPEN_OK,
    CONNECTION_SECURE,
    CONNECTION_START,
    CONNECTION_TUNE,
    CONNECTION_UNBLOCKED,
)
from ._state import FREED, ChannelState, ConnectionState, connection_transition

#: Publisher confirms: decoded by hand on the hot path.
_CONFIRMS = frozenset({BASIC_ACK, BASIC_NACK})


class Receiver:
    """Base class of :class:`~._connection.AMQPConnection` holding its receiving side.

    The attributes are set by ``AMQPConnection.__init__``; they are declared here for the
    methods that read them.
    """

    state: ConnectionState
    blocked: bool
    frame_max: int
    max_message_size: int
    channel_max: int
    heartbeat: int
    server_properties: dict[str, Any]
    username: str
    password: str
    virtual_host: str
    locale: str
    client_properties: dict[str, Any]
    last_received: float
    _wanted_heartbeat: int | None
    _wanted_frame_max: int
    _wanted_channel_max: int
    _error: ProtocolError | None
    _channels: dict[int, ChannelRecord]
    _peer_closed: set[int]
    _buffer: bytes
    _out: list[bytes]
    _out_size: int

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def _fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        """Enter the sticky error state and tell the peer why, then return ``error``."""
        if self._error is None:
            self._error = error
            if self.state not in (ConnectionState.CLOSED, ConnectionState.IDLE):
                close = commands.Connection.Close(
                    reply_code=error.reply_code,
                    reply_text=str(error).encode("utf-8")[:255].decode("utf-8", "ignore"),
                    class_id=0,
                    method_id=0,
                )
                self._send(encode_method(0, close))
            self.state = ConnectionState.ERROR
        return error

    def receive_data(self, data: bytes | bytearray, now: float | None = None) -> list[AMQPEvent]:
        """Feed bytes read from the peer; return the events they complete.

        Partial frames are kept until the rest arrives. Raises
        :class:`RemoteProtocolError` (sticky) on any protocol violation; the bytes queued
        by then include a ``Connection.Close`` telling the peer why, best effort.
        """
        if self._error is not None:
            raise self._error
        if now is not None:
            self.last_received = now
        if type(data) is not bytes:
            data = bytes(data)  # bodies are slices of it: they must be immutable bytes
        if self._buffer:
            data = self._buffer + data
        events: list[AMQPEvent] = []
        try:
            consumed = self._parse(data, events)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        self._buffer = data[consumed:] if consumed < len(data) else b""
        return events

    def _parse(self, data: bytes, events: list[AMQPEvent]) -> int:
        """Parse every complete frame in ``data``; return how many bytes were used."""
        pos = 0
        size = len(data)
        frame_max = self.frame_max
        channels = self._channels
        unpack_header = frame_header.unpack_from
        unpack_index = method_index.unpack_from
        on_header = _content.on_header
        on_body = _content.on_body
        max_message_size = self.max_message_size
        closed = ConnectionState.CLOSED
        open_ = ChannelState.OPEN
        if self.state is ConnectionState.AWAIT_START and size and data[0] == 0x41:  # "A"
            # The server refused our version and answered with the one it speaks.
            if size < 8:
                return 0
            raise RemoteProtocolError(
                f"server does not support AMQP 0-9-1 (it answered {data[:8]!r})", COMMAND_INVALID
            )
        while size - pos >= FRAME_HEADER_SIZE:
            if self.state is closed:
                return size  # nothing after the close handshake means anything
            frame_type, channel, payload_size = unpack_header(data, pos)
            if payload_size + FRAME_OVERHEAD > frame_max:
                raise RemoteProtocolError(
                    f"frame of {payload_size} bytes exceeds frame_max {frame_max}", FRAME_ERROR
                )
            end = pos + FRAME_HEADER_SIZE + payload_size
            if end >= size:
                break  # incomplete: wait for more bytes
            if data[end] != FRAME_END:
                raise RemoteProtocolError(
                    f"frame end octet is {data[end]:#04x}, not 0xce", FRAME_ERROR
                )
            start = pos + FRAME_HEADER_SIZE
            next_pos = end + 1
            if channel:
                ch = channels.get(channel)
                if ch is None:
                    self._on_unknown_channel(frame_type, channel, data, start, end)
                elif frame_type == FRAME_METHOD:
                    if payload_size < 4:
                        raise RemoteProtocolError("method frame too short", FRAME_ERROR)
                    index = unpack_index(data, start)[0]
                    # The hot path: CHANNEL_TRANSITIONS allows these in OPEN.
                    if index == BASIC_DELIVER and ch.state is open_:
                        if ch.content is not None:
                            raise RemoteProtocolError(
                                f"Basic.Deliver on channel {channel} before the previous "
                                "message's content was complete",
                                UNEXPECTED_FRAME,
                            )
                        ch.content = (BASIC_DELIVER, *decode_deliver(data, start + 4, end))
                        ch.content_remaining = -1
                    elif (
                        index in _CONFIRMS
                        and ch.state is open_
                        and ch.content is None  # else: _on_channel_method raises 505
                    ):
                        tag, bits = decode_confirm(data, start + 4, end)
                        self._on_confirm(ch, tag, bool(bits & 1), index == BASIC_ACK, events)
                    else:
                        self._on_channel_method(ch, decode_method(data, pos, next_pos), events)
                elif frame_type == FRAME_HEADER:
                    on_header(ch, data, start, end, events, max_message_size)
                elif frame_type == FRAME_BODY:
                    on_body(ch, data[start:end], events)
                else:
                    raise RemoteProtocolError(
                        f"frame type {frame_type} is not valid on channel {channel}", FRAME_ERROR
                    )
            elif frame_type == FRAME_METHOD:
                if payload_size < 4:
                    raise RemoteProtocolError("method frame too short", FRAME_ERROR)
                self._on_connection_method(decode_method(data, pos, next_pos), events)
            elif frame_type == FRAME_HEARTBEAT:
                if payload_size:
                    raise RemoteProtocolError("heartbeat frame with a payload", FRAME_ERROR)
            else:
                raise RemoteProtocolError(
                    f"frame type {frame_type} is not valid on channel 0", CHANNEL_ERROR
                )
            pos = next_pos
        return pos

    def _on_unknown_channel(
        self, frame_type: int, channel: int, data: bytes, start: int, end: int
    ) -> None:
        # A CloseOk for a channel we freed early (both sides closed it at once) is harmless.
        if (
            frame_type == FRAME_METHOD
            and end - start >= 4
            and method_index.unpack_from(data, start)[0] == CHANNEL_CLOSE_OK
        ):
            return
        if self.state is ConnectionState.CLOSING or channel in self._peer_closed:
            return
        raise RemoteProtocolError(f"frame on channel {channel}, which is not open", CHANNEL_ERROR)

    def _on_confirm(
        self, ch: ChannelRecord, tag: int, multiple: bool, ack: bool, events: list[AMQPEvent]
    ) -> None:
        confirms = ch.confirms
        if confirms is None:
            raise RemoteProtocolError(
                f"publisher confirm on channel {ch.number}, which is not in confirm mode",
                UNEXPECTED_FRAME,
            )
        tags = confirms.resolve(tag, multiple, ch.number)
        if tags:
            events.append(PublishConfirmed(ch.number, tags, ack))

    # ---------------------------------------------------------------- channel 0

    def _on_connection_method(self, method: base.Frame, events: list[AMQPEvent]) -> None:
        index = method.index
        target = connection_transition(self.state, index, method.name)
        if target is not None:
            _CONNECTION_ACTIONS[index](self, method, events)
            self.state = target

    def _on_start(self, method: commands.Connection.Start, events: list[AMQPEvent]) -> None:
        self.server_properties = dict(method.server_properties or {})
        reply = start_ok(
            method,
            username=self.username,
            password=self.password,
            client_properties=self.client_properties,
            locale=self.locale,
        )
        self._send(encode_method(0, reply))

    def _on_secure(self, method: commands.Connection.Secure, events: list[AMQPEvent]) -> None:
        raise refuse_secure()

    def _on_tune(self, method: commands.Connection.Tune, events: list[AMQPEvent]) -> None:
        reply = tune_ok(
            method,
            channel_max=self._wanted_channel_max,
            frame_max=self._wanted_frame_max,
            heartbeat=self._wanted_heartbeat,
        )
        self.channel_max = reply.channel_max
        self.frame_max = reply.frame_max
        self.heartbeat = reply.heartbeat
        self._send(encode_method(0, reply))
        self._send(encode_method(0, commands.Connection.Open(virtual_host=self.virtual_host)))

    def _on_open_ok(self, method: commands.Connection.OpenOk, events: list[AMQPEvent]) -> None:
        events.append(
            ConnectionOpened(
                self.server_properties, self.channel_max, self.frame_max, self.heartbeat
            )
        )

    def _on_blocked(self, method: commands.Connection.Blocked, events: list[AMQPEvent]) -> None:
        self.blocked = True
        events.append(ConnectionBlocked(method.reason or ""))

    def _on_unblocked(self, method: commands.Connection.Unblocked, events: list[AMQPEvent]) -> None:
        self.blocked = False
        events.append(ConnectionUnblocked())

    def _on_close(self, method: commands.Connection.Close, events: list[AMQPEvent]) -> None:
        self._send(encode_method(0, commands.Connection.CloseOk()))
        events.append(
            ConnectionClosed(
                method.reply_code or 0,
                method.reply_text or "",
                by_peer=True,
                class_id=method.class_id or 0,
                method_id=method.method_id or 0,
            )
        )
        self._channels.clear()

    def _on_close_ok(self, method: commands.Connection.CloseOk, events: list[AMQPEvent]) -> None:
        events.append(ConnectionClosed(200, "closed by client", by_peer=False))
        self._channels.clear()

    # ----------------------------------------------------------------- channels

    def _on_channel_method(
        self, ch: ChannelRecord, method: base.Frame, events: list[AMQPEvent]
    ) -> None:
        if receive_channel_method(ch, method, events, self._send) is FREED:
            del self._channels[ch.number]
            if method.index == CHANNEL_CLOSE:
                # Closed by the broker, which keeps sending what was already on its way:
                # the number is quarantined (see AMQPConnection.open_channel), and frames
                # still arriving on it are dropped.
                self._peer_closed.add(ch.number)


_Action = Callable[[Receiver, Any, list[AMQPEvent]], None]

#: What each channel-0 method does (CONNECTION_TRANSITIONS says when it may arrive).
_CONNECTION_ACTIONS: dict[int, _Action] = {
    CONNECTION_START: Receiver._on_start,
    CONNECTION_SECURE: Receiver._on_secure,
    CONNECTION_TUNE: Receiver._on_tune,
    CONNECTION_OPEN_OK: Receiver._on_open_ok,
    CONNECTION_BLOCKED: Receiver._on_blocked,
    CONNECTION_UNBLOCKED: Receiver._on_unblocked,
    CONNECTION_CLOSE: Receiver._on_close,
    CONNECTION_CLOSE_OK: Receiver._on_close_ok,
}
