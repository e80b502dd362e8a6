"""The AMQP 0-9-1 connection state machine, without I/O.

:class:`AMQPConnection` takes bytes from the peer (:meth:`~AMQPConnection.receive_data`)
and returns typed events; it takes commands (:meth:`~AMQPConnection.publish`,
:meth:`~AMQPConnection.send_method`, ...) and queues the bytes they produce for
:meth:`~AMQPConnection.data_to_send`. It imports no trio, no socket and no clock: time
enters as arguments (``now``) so heartbeat rules are testable without waiting.

Rules it owns, each for a protocol reason:

* Framing: the 7-byte header, the payload size, the 0xCE end octet. A frame bigger than
  the negotiated ``frame_max`` is refused *before* its payload arrives, so a hostile or
  broken peer cannot make us buffer without bound.
* Content assembly: a content-bearing method (Deliver, GetOk, Return) is followed on the
  same channel by one header frame and body frames summing to the announced size; frames of
  other channels may interleave (spec 4.2.6).
* Replies the protocol mandates are queued here, not by the caller: ``Connection.CloseOk``
  and ``Channel.CloseOk`` (a peer waits for them), ``Basic.CancelOk`` for a broker cancel
  that asks for one, ``Channel.FlowOk``.
* Channel numbers: a channel we are closing keeps its number until ``CloseOk`` arrives,
  and every frame the peer sends on it meanwhile is dropped (spec 4.2.7: "the peer that
  sends Close must discard frames until CloseOk").
* Publisher confirms: sequence numbers are kept in a deque in publish order; a
  ``multiple`` ack pops from the left, so resolving N confirms costs O(N), never a scan.
* Errors are sticky: after a :class:`RemoteProtocolError` every call re-raises it, as the
  byte stream can no longer be trusted.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Mapping
from typing import Any

from pamqp import base, commands
from pamqp import exceptions as pamqp_exceptions
from pamqp import frame as pamqp_frame

from . import _frames as F
from ._errors import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    FRAME_ERROR,
    NOT_IMPLEMENTED,
    UNEXPECTED_FRAME,
    HeartbeatTimeout,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import (
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    Event,
    MethodReceived,
    PublishConfirmed,
    Returned,
)

__all__ = ["AMQPConnection", "ChannelState", "ConnectionState", "negotiate"]

#: The largest frame we accept before ``Connection.Tune`` tells us the real limit.
DEFAULT_FRAME_MAX = 131072
DEFAULT_CHANNEL_MAX = 2047

_frame_header = struct.Struct(">BHI")
_method_index = struct.Struct(">I")
_content_sizes = struct.Struct(">HHQ")


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


def negotiate(client: int | None, server: int) -> int:
    """RabbitMQ's rule for heartbeat, frame_max and channel_max.

    ``None`` from the client means "whatever the server proposes". Otherwise 0 means "no
    limit", so if either side says 0 the other side's value wins (the greater of the two);
    if both set a limit, the smaller one is used.
    """
    if client is None:
        return server
    if client == 0 or server == 0:
        return max(client, server)
    return min(client, server)


class _Channel:
    __slots__ = (
        "awaiting",
        "confirm",
        "content",
        "content_parts",
        "content_remaining",
        "content_size",
        "number",
        "publish_seq",
        "returns_pending",
        "stale",
        "state",
        "unconfirmed",
    )

    def __init__(self, number: int) -> None:
        self.number = number
        self.state = ChannelState.OPENING
        #: pamqp names of the replies allowed for the outstanding synchronous request.
        self.awaiting: list[str] | None = ["Channel.OpenOk"]
        # Content assembly: the method that announced content, then its header.
        self.content: tuple[Any, ...] | None = None
        self.content_size = 0
        self.content_remaining = -1  # -1: waiting for the header frame
        self.content_parts: list[bytes] = []
        self.confirm = False
        self.publish_seq = 0
        self.unconfirmed: deque[int] = deque()
        #: (publish tag, exchange, routing key) of mandatory publishes not yet confirmed.
        self.returns_pending: deque[tuple[int, str, str]] = deque()
        #: Reopened after the broker closed this number: until ``OpenOk``, frames of the
        #: previous incarnation may still arrive and are discarded.
        self.stale = False


class AMQPConnection:
    """One AMQP 0-9-1 client connection, as a pure state machine.

    Typical use by an I/O layer::

        conn = AMQPConnection(username="guest", password="guest")
        conn.initiate()
        sock.sendall(conn.data_to_send())
        while True:
            for event in conn.receive_data(sock.recv(65536)):
                ...

    ``heartbeat``, ``frame_max`` and ``channel_max`` are what we would like; the values in
    force after the handshake are negotiated with the server (see :func:`negotiate`) and
    exposed as attributes of the same names.
    """

    def __init__(
        self,
        *,
        username: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
        heartbeat: int | None = None,
        frame_max: int = DEFAULT_FRAME_MAX,
        channel_max: int = DEFAULT_CHANNEL_MAX,
        client_properties: Mapping[str, Any] | None = None,
        locale: str = "en_US",
    ) -> None:
        if frame_max and frame_max < 4096:
            raise LocalProtocolError("frame_max must be at least 4096 (spec frame-min-size)")
        self.username = username
        self.password = password
        self.virtual_host = virtual_host
        self.locale = locale
        self.client_properties: dict[str, Any] = dict(client_properties or {})
        self._wanted_heartbeat = heartbeat
        self._wanted_frame_max = frame_max
        self._wanted_channel_max = channel_max
        self.heartbeat = 0
        self.frame_max = frame_max or DEFAULT_FRAME_MAX
        self.channel_max = channel_max or DEFAULT_CHANNEL_MAX
        self.server_properties: dict[str, Any] = {}
        self.state = ConnectionState.IDLE
        self.blocked = False
        self._error: ProtocolError | None = None
        self._channels: dict[int, _Channel] = {}
        # Numbers the broker closed. RabbitMQ keeps sending the deliveries already on their
        # way after its Channel.Close (hundreds with a large prefetch; each channel has its
        # own writer process, so they may even come after a reopened channel's OpenOk).
        # Frames on such a number are discarded, not a protocol error, and the number is
        # quarantined: `open_channel` takes it again only when no other number is free.
        self._peer_closed: set[int] = set()
        self._buffer = b""
        self._out: list[bytes] = []
        self._out_size = 0
        self._publish_cache: dict[tuple[int, str, str, bool, bool], bytes] = {}
        self.last_received = 0.0
        self.last_sent = 0.0

    # ------------------------------------------------------------------ output

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    @property
    def pending_output(self) -> int:
        """Bytes queued and not yet taken by :meth:`data_to_send` (for backpressure)."""
        return self._out_size

    def data_to_send(self, now: float | None = None) -> bytes:
        """Take every byte queued so far, to be written to the socket in order.

        Passing ``now`` records it as the time of the last send for heartbeats; pass it
        when the bytes returned are about to be written.
        """
        if not self._out:
            return b""
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if now is not None:
            self.last_sent = now
        return data

    # ----------------------------------------------------------------- helpers

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"connection is not open (state: {self.state.value})")

    def _open_channel(self, channel: int) -> _Channel:
        if self._error is not None:
            raise self._error
        ch = self._channels.get(channel)
        if ch is None or ch.state is not ChannelState.OPEN:
            state = "not open" if ch is None else ch.state.value
            raise LocalProtocolError(f"channel {channel} is {state}")
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"connection is not open (state: {self.state.value})")
        return ch

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
                self._send(F.encode_method(0, close))
            self.state = ConnectionState.ERROR
        return error

    # -------------------------------------------------------------- handshake

    def initiate(self) -> None:
        """Queue the protocol header that opens the conversation."""
        if self.state is not ConnectionState.IDLE:
            raise LocalProtocolError("initiate() was already called")
        self._send(F.PROTOCOL_HEADER)
        self.state = ConnectionState.AWAIT_START

    def _on_connection_method(self, method: base.Frame, events: list[Event]) -> None:
        state = self.state
        if isinstance(method, commands.Connection.Close):
            self._send(F.encode_method(0, commands.Connection.CloseOk()))
            self.state = ConnectionState.CLOSED
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
        elif isinstance(method, commands.Connection.CloseOk):
            if state is not ConnectionState.CLOSING:
                raise RemoteProtocolError("unexpected Connection.CloseOk", UNEXPECTED_FRAME)
            self.state = ConnectionState.CLOSED
            events.append(ConnectionClosed(200, "closed by client", by_peer=False))
            self._channels.clear()
        elif state is ConnectionState.CLOSING:
            pass  # spec 4.2.7: discard everything until CloseOk
        elif isinstance(method, commands.Connection.Start) and state is ConnectionState.AWAIT_START:
            self._on_start(method)
        elif isinstance(method, commands.Connection.Tune) and state is ConnectionState.AWAIT_TUNE:
            self._on_tune(method)
        elif (
            isinstance(method, commands.Connection.OpenOk)
            and state is ConnectionState.AWAIT_OPEN_OK
        ):
            self.state = ConnectionState.OPEN
            events.append(
                ConnectionOpened(
                    self.server_properties, self.channel_max, self.frame_max, self.heartbeat
                )
            )
        elif isinstance(method, commands.Connection.Blocked) and state is ConnectionState.OPEN:
            self.blocked = True
            events.append(ConnectionBlocked(method.reason or ""))
        elif isinstance(method, commands.Connection.Unblocked) and state is ConnectionState.OPEN:
            self.blocked = False
            events.append(ConnectionUnblocked())
        elif isinstance(method, commands.Connection.Secure):
            raise RemoteProtocolError(
                "server sent Connection.Secure; only PLAIN authentication is supported",
                NOT_IMPLEMENTED,
            )
        else:
            raise RemoteProtocolError(
                f"unexpected {method.name} on channel 0 in state {state.value}", UNEXPECTED_FRAME
            )

    def _on_start(self, method: commands.Connection.Start) -> None:
        if (method.version_major, method.version_minor) != (0, 9):
            raise RemoteProtocolError(
                f"server speaks AMQP {method.version_major}-{method.version_minor}, not 0-9-1",
                COMMAND_INVALID,
            )
        mechanisms = (method.mechanisms or "").split()
        if "PLAIN" not in mechanisms:
            raise RemoteProtocolError(
                f"server offers no PLAIN authentication (offers: {mechanisms})", NOT_IMPLEMENTED
            )
        self.server_properties = dict(method.server_properties or {})
        response = f"\0{self.username}\0{self.password}"
        start_ok = commands.Connection.StartOk(
            client_properties=self.client_properties,
            mechanism="PLAIN",
            response=response,
            locale=self.locale,
        )
        self._send(F.encode_method(0, start_ok))
        self.state = ConnectionState.AWAIT_TUNE

    def _on_tune(self, method: commands.Connection.Tune) -> None:
        # The spec's frame-min-size: below 4096 a peer could not even carry a content header
        # with ordinary properties. Such a Tune is a broken or hostile peer, not a setting.
        if 0 < (method.frame_max or 0) < 4096:
            raise RemoteProtocolError(
                f"server proposed frame_max {method.frame_max}, below the minimum of 4096",
                COMMAND_INVALID,
            )
        self.channel_max = (
            negotiate(self._wanted_channel_max, method.channel_max or 0) or DEFAULT_CHANNEL_MAX
        )
        self.channel_max = min(self.channel_max, 65535)
        self.frame_max = negotiate(self._wanted_frame_max, method.frame_max or 0) or (
            DEFAULT_FRAME_MAX
        )
        self.heartbeat = negotiate(self._wanted_heartbeat, method.heartbeat or 0)
        self._send(
            F.encode_method(
                0,
                commands.Connection.TuneOk(
                    channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
                ),
            )
        )
        self._send(F.encode_method(0, commands.Connection.Open(virtual_host=self.virtual_host)))
        self.state = ConnectionState.AWAIT_OPEN_OK

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray, now: float | None = None) -> list[Event]:
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
        events: list[Event] = []
        try:
            consumed = self._parse(data, events)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        self._buffer = data[consumed:] if consumed < len(data) else b""
        return events

    def _parse(self, data: bytes, events: list[Event]) -> int:
        """Parse every complete frame in ``data``; return how many bytes were used."""
        pos = 0
        size = len(data)
        frame_max = self.frame_max
        channels = self._channels
        unpack_header = _frame_header.unpack_from
        if self.state is ConnectionState.AWAIT_START and size and data[0] == 0x41:  # "A"
            # The server refused our version and answered with the one it speaks.
            if size < 8:
                return 0
            raise RemoteProtocolError(
                f"server does not support AMQP 0-9-1 (it answered {data[:8]!r})", COMMAND_INVALID
            )
        while size - pos >= F.FRAME_HEADER_SIZE:
            if self.state is ConnectionState.CLOSED:
                return size  # nothing after the close handshake means anything
            frame_type, channel, payload_size = unpack_header(data, pos)
            if payload_size + F.FRAME_OVERHEAD > frame_max:
                raise RemoteProtocolError(
                    f"frame of {payload_size} bytes exceeds frame_max {frame_max}", FRAME_ERROR
                )
            end = pos + F.FRAME_HEADER_SIZE + payload_size
            if end >= size:
                break  # incomplete: wait for more bytes
            if data[end] != F.FRAME_END:
                raise RemoteProtocolError(
                    f"frame end octet is {data[end]:#04x}, not 0xce", FRAME_ERROR
                )
            start = pos + F.FRAME_HEADER_SIZE
            next_pos = end + 1
            if channel:
                ch = channels.get(channel)
                if ch is None:
                    self._on_unknown_channel(frame_type, channel, data, pos, start, end)
                elif frame_type == F.FRAME_METHOD:
                    if payload_size < 4:
                        raise RemoteProtocolError("method frame too short", FRAME_ERROR)
                    index = _method_index.unpack_from(data, start)[0]
                    if index == F.BASIC_DELIVER and ch.state is ChannelState.OPEN:
                        if ch.content is not None:
                            raise RemoteProtocolError(
                                f"Basic.Deliver on channel {channel} before the previous "
                                "message's content was complete",
                                UNEXPECTED_FRAME,
                            )
                        ch.content = (F.BASIC_DELIVER, *F.decode_deliver(data, start + 4, end))
                        ch.content_remaining = -1
                    elif (
                        index in (F.BASIC_ACK, F.BASIC_NACK)
                        and ch.state is ChannelState.OPEN
                        and ch.content is None  # else: the generic path raises 505
                    ):
                        tag, bits = F.decode_confirm(data, start + 4, end)
                        self._on_confirm(ch, tag, bool(bits & 1), index == F.BASIC_ACK, events)
                    else:
                        method = self._unmarshal_method(data, pos, next_pos)
                        self._on_channel_method(ch, method, events)
                elif frame_type == F.FRAME_HEADER:
                    self._on_content_header(ch, data, start, end, events)
                elif frame_type == F.FRAME_BODY:
                    self._on_content_body(ch, data[start:end], events)
                else:
                    raise RemoteProtocolError(
                        f"frame type {frame_type} is not valid on channel {channel}", FRAME_ERROR
                    )
            elif frame_type == F.FRAME_METHOD:
                if payload_size < 4:
                    raise RemoteProtocolError("method frame too short", FRAME_ERROR)
                method = self._unmarshal_method(data, pos, next_pos)
                self._on_connection_method(method, events)
            elif frame_type == F.FRAME_HEARTBEAT:
                if payload_size:
                    raise RemoteProtocolError("heartbeat frame with a payload", FRAME_ERROR)
            else:
                raise RemoteProtocolError(
                    f"frame type {frame_type} is not valid on channel 0", CHANNEL_ERROR
                )
            pos = next_pos
        return pos

    @staticmethod
    def _unmarshal_method(data: bytes, pos: int, next_pos: int) -> base.Frame:
        try:
            _, _, method = pamqp_frame.unmarshal(data[pos:next_pos])
        except (pamqp_exceptions.UnmarshalingException, ValueError, struct.error) as exc:
            raise RemoteProtocolError(f"malformed method frame: {exc}", FRAME_ERROR) from exc
        except Exception as exc:  # pamqp can raise OverflowError, KeyError, ... on garbage
            raise RemoteProtocolError(f"malformed method frame: {exc!r}", FRAME_ERROR) from exc
        if not isinstance(method, base.Frame):
            raise RemoteProtocolError("expected a method frame", FRAME_ERROR)
        return method

    def _on_unknown_channel(
        self, frame_type: int, channel: int, data: bytes, pos: int, start: int, end: int
    ) -> None:
        # A CloseOk for a channel we freed early (both sides closed it at once) is harmless.
        if (
            frame_type == F.FRAME_METHOD
            and end - start >= 4
            and _method_index.unpack_from(data, start)[0] == 0x00140029  # Channel.CloseOk
        ):
            return
        if self.state is ConnectionState.CLOSING or channel in self._peer_closed:
            return
        raise RemoteProtocolError(f"frame on channel {channel}, which is not open", CHANNEL_ERROR)

    # --------------------------------------------------------------- channels

    def _on_channel_method(self, ch: _Channel, method: base.Frame, events: list[Event]) -> None:
        if ch.state is ChannelState.CLOSING:
            if isinstance(method, commands.Channel.CloseOk):
                del self._channels[ch.number]
                events.append(ChannelClosed(ch.number, 200, "closed by client", by_peer=False))
            elif isinstance(method, commands.Channel.Close):
                # Both sides closed at once: answer, and the number is free.
                self._send(F.encode_method(ch.number, commands.Channel.CloseOk()))
                del self._channels[ch.number]
                self._peer_closed.add(ch.number)
                events.append(self._channel_closed_by_peer(ch.number, method))
            return  # spec 4.2.7: anything else is discarded until CloseOk
        if isinstance(method, commands.Channel.Close):
            self._send(F.encode_method(ch.number, commands.Channel.CloseOk()))
            del self._channels[ch.number]
            self._peer_closed.add(ch.number)
            events.append(self._channel_closed_by_peer(ch.number, method))
            return
        if ch.stale:
            if not isinstance(method, commands.Channel.OpenOk):
                return  # a frame of the number's previous incarnation
            ch.stale = False
        if ch.content is not None:
            raise RemoteProtocolError(
                f"{method.name} on channel {ch.number} interrupts a message's content",
                UNEXPECTED_FRAME,
            )
        awaiting = ch.awaiting
        if awaiting is not None and method.name in awaiting:
            ch.awaiting = None
            if isinstance(method, commands.Channel.OpenOk):
                ch.state = ChannelState.OPEN
                events.append(ChannelOpened(ch.number))
                return
            if isinstance(method, commands.Confirm.SelectOk):
                ch.confirm = True
            if isinstance(method, commands.Basic.GetOk):
                ch.content = (
                    0x003C0047,
                    method.delivery_tag,
                    method.redelivered,
                    method.exchange,
                    method.routing_key,
                    method.message_count,
                )
                ch.content_remaining = -1
                return
            events.append(MethodReceived(ch.number, method))
            return
        if ch.state is not ChannelState.OPEN:
            raise RemoteProtocolError(
                f"{method.name} on channel {ch.number} before Channel.OpenOk", UNEXPECTED_FRAME
            )
        if isinstance(method, commands.Basic.Return):
            ch.content = (
                0x003C0032,
                method.reply_code,
                method.reply_text,
                method.exchange,
                method.routing_key,
            )
            ch.content_remaining = -1
        elif isinstance(method, commands.Basic.Cancel):
            if not method.nowait:
                self._send(F.encode_method(ch.number, commands.Basic.CancelOk(method.consumer_tag)))
            events.append(ConsumerCancelled(ch.number, method.consumer_tag or ""))
        elif isinstance(method, commands.Channel.Flow):
            self._send(F.encode_method(ch.number, commands.Channel.FlowOk(method.active)))
            events.append(ChannelFlow(ch.number, bool(method.active)))
        elif isinstance(method, commands.Basic.Deliver):  # reached only via pamqp in tests
            ch.content = (
                F.BASIC_DELIVER,
                method.consumer_tag,
                method.delivery_tag,
                method.redelivered,
                method.exchange,
                method.routing_key,
            )
            ch.content_remaining = -1
        else:
            raise RemoteProtocolError(
                f"unexpected {method.name} on channel {ch.number}", UNEXPECTED_FRAME
            )

    @staticmethod
    def _channel_closed_by_peer(number: int, method: commands.Channel.Close) -> ChannelClosed:
        return ChannelClosed(
            number,
            method.reply_code or 0,
            method.reply_text or "",
            by_peer=True,
            class_id=method.class_id or 0,
            method_id=method.method_id or 0,
        )

    def _on_content_header(
        self, ch: _Channel, data: bytes, start: int, end: int, events: list[Event]
    ) -> None:
        if ch.state is ChannelState.CLOSING or ch.stale:
            return
        if ch.content is None or ch.content_remaining != -1:
            raise RemoteProtocolError(
                f"unexpected content header on channel {ch.number}", UNEXPECTED_FRAME
            )
        if end - start < 14:
            raise RemoteProtocolError("content header frame too short", FRAME_ERROR)
        class_id, _weight, body_size = _content_sizes.unpack_from(data, start)
        if class_id != 60:
            raise RemoteProtocolError(
                f"content header for class {class_id}, expected 60 (basic)", FRAME_ERROR
            )
        ch.content_size = body_size
        ch.content_remaining = body_size
        ch.content_parts = [data[start + 12 : end]]  # [raw properties, body parts...]
        if body_size == 0:
            self._complete_content(ch, events)

    def _on_content_body(self, ch: _Channel, payload: bytes, events: list[Event]) -> None:
        if ch.state is ChannelState.CLOSING or ch.stale:
            return
        if ch.content is None or ch.content_remaining <= 0:
            raise RemoteProtocolError(
                f"unexpected content body on channel {ch.number}", UNEXPECTED_FRAME
            )
        remaining = ch.content_remaining - len(payload)
        if remaining < 0:
            raise RemoteProtocolError(
                f"content body on channel {ch.number} exceeds the announced "
                f"{ch.content_size} bytes",
                FRAME_ERROR,
            )
        ch.content_parts.append(payload)
        ch.content_remaining = remaining
        if remaining == 0:
            self._complete_content(ch, events)

    def _complete_content(self, ch: _Channel, events: list[Event]) -> None:
        parts = ch.content_parts
        raw_properties = parts[0]
        body = parts[1] if len(parts) == 2 else b"".join(parts[1:])
        content = ch.content
        assert content is not None
        ch.content = None
        ch.content_parts = []
        kind = content[0]
        if kind == F.BASIC_DELIVER:
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
        elif kind == 0x003C0047:  # GetOk
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
        else:  # Return
            _, code, text, exchange, routing_key = content
            exchange = exchange or ""
            routing_key = routing_key or ""
            events.append(
                Returned(
                    ch.number,
                    code or 0,
                    text or "",
                    exchange,
                    routing_key,
                    body,
                    raw_properties,
                    delivery_tag=self._match_return(ch, exchange, routing_key),
                )
            )

    @staticmethod
    def _match_return(ch: _Channel, exchange: str, routing_key: str) -> int | None:
        """Find which mandatory publish a ``Basic.Return`` is about.

        The return does not carry the publish sequence number. The broker routes a
        channel's publishes in order and sends a return before the confirm of the same
        message, so the return is about the oldest unconfirmed mandatory publish to the
        same exchange and routing key.
        """
        pending = ch.returns_pending
        lowest = ch.unconfirmed[0] if ch.unconfirmed else None
        while pending and (lowest is None or pending[0][0] < lowest):
            pending.popleft()  # confirmed already: cannot be returned any more
        for i, (tag, ex, rk) in enumerate(pending):
            if ex == exchange and rk == routing_key and tag in ch.unconfirmed:
                del pending[i]
                return tag
        return None

    def _on_confirm(
        self, ch: _Channel, tag: int, multiple: bool, ack: bool, events: list[Event]
    ) -> None:
        if not ch.confirm:
            raise RemoteProtocolError(
                f"publisher confirm on channel {ch.number}, which is not in confirm mode",
                UNEXPECTED_FRAME,
            )
        unconfirmed = ch.unconfirmed
        if multiple:
            if tag == 0:  # spec: multiple with tag 0 means "everything outstanding"
                tags = list(unconfirmed)
                unconfirmed.clear()
            else:
                tags = []
                while unconfirmed and unconfirmed[0] <= tag:
                    tags.append(unconfirmed.popleft())
        elif unconfirmed and unconfirmed[0] == tag:
            unconfirmed.popleft()
            tags = [tag]
        else:
            try:
                unconfirmed.remove(tag)
            except ValueError:
                raise RemoteProtocolError(
                    f"confirm for unknown delivery tag {tag} on channel {ch.number}",
                    COMMAND_INVALID,
                ) from None
            tags = [tag]
        if tags:
            events.append(PublishConfirmed(ch.number, tags, ack))

    # --------------------------------------------------------------- commands

    def open_channel(self, channel: int | None = None) -> int:
        """Queue ``Channel.Open``; return the channel number (lowest free if not given;
        a number the broker closed is taken only when no other is free).

        A :class:`ChannelOpened` event follows when the broker agrees.
        """
        self._check_usable()
        if channel is None:
            in_use, quarantined = self._channels, self._peer_closed
            numbers = range(1, self.channel_max + 1)
            channel = next((n for n in numbers if n not in in_use and n not in quarantined), 0)
            if not channel:
                channel = next((n for n in numbers if n not in in_use), 0)
            if not channel:
                raise LocalProtocolError(f"all {self.channel_max} channels are in use")
        elif not 1 <= channel <= self.channel_max:
            raise LocalProtocolError(f"channel number must be in 1..{self.channel_max}")
        elif channel in self._channels:
            raise LocalProtocolError(f"channel {channel} is in use")
        ch = self._channels[channel] = _Channel(channel)
        if channel in self._peer_closed:
            self._peer_closed.discard(channel)
            ch.stale = True
        self._send(F.encode_method(channel, commands.Channel.Open()))
        return channel

    def channel_state(self, channel: int) -> ChannelState | None:
        """The state of ``channel``, or ``None`` if the number is free."""
        ch = self._channels.get(channel)
        return None if ch is None else ch.state

    def is_confirm_mode(self, channel: int) -> bool:
        """Whether ``Confirm.SelectOk`` arrived on ``channel``."""
        ch = self._channels.get(channel)
        return ch is not None and ch.confirm

    def unconfirmed(self, channel: int) -> int:
        """How many publishes on ``channel`` still wait for a confirm."""
        ch = self._channels.get(channel)
        return 0 if ch is None else len(ch.unconfirmed)

    def close_channel(self, channel: int, reply_code: int = 200, reply_text: str = "") -> None:
        """Queue ``Channel.Close``; the number stays taken until ``CloseOk`` arrives."""
        if self._error is not None:
            raise self._error
        ch = self._channels.get(channel)
        if ch is None or ch.state is ChannelState.CLOSING:
            raise LocalProtocolError(f"channel {channel} is not open")
        self._check_usable()
        ch.state = ChannelState.CLOSING
        ch.awaiting = ["Channel.CloseOk"]
        ch.content = None
        self._send(
            F.encode_method(
                channel,
                commands.Channel.Close(
                    reply_code=reply_code, reply_text=reply_text, class_id=0, method_id=0
                ),
            )
        )

    def send_method(self, channel: int, method: base.Frame) -> bool:
        """Queue a method frame (declare, bind, qos, consume, cancel, ...).

        Returns whether a reply is expected (a synchronous method without ``nowait``); its
        :class:`MethodReceived` event follows. The protocol allows one synchronous request
        in flight per channel; a second one raises :class:`LocalProtocolError`.
        """
        ch = self._open_channel(channel)
        if isinstance(method, _FORBIDDEN_IN_SEND_METHOD):
            raise LocalProtocolError(f"use the dedicated method to send {method.name}")
        expects_reply = method.synchronous and not getattr(method, "nowait", False)
        if expects_reply:
            if ch.awaiting is not None:
                raise LocalProtocolError(
                    f"channel {channel} already waits for {ch.awaiting}; one synchronous "
                    "request at a time"
                )
            ch.awaiting = list(method.valid_responses)
        try:
            self._send(F.encode_method(channel, method))
        except (ValueError, TypeError, struct.error) as exc:
            if expects_reply:
                ch.awaiting = None
            raise LocalProtocolError(f"cannot encode {method.name}: {exc}") from exc
        return expects_reply

    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: commands.Basic.Properties | None = None,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> int:
        """Queue ``Basic.Publish`` + header + body frames (body split at frame_max - 8).

        Returns the publish sequence number in confirm mode (the delivery tag the
        broker's confirm will carry), else 0.
        """
        ch = self._open_channel(channel)
        key = (channel, exchange, routing_key, mandatory, immediate)
        method = self._publish_cache.get(key)
        if method is None:
            method = F.encode_publish(channel, exchange, routing_key, mandatory, immediate)
            if len(self._publish_cache) > 1024:
                self._publish_cache.clear()
            self._publish_cache[key] = method
        raw_props = F.encode_properties(properties)
        header = F.encode_content_header(channel, len(body), raw_props)
        max_payload = self.frame_max - F.FRAME_OVERHEAD
        if len(header) > self.frame_max:
            raise LocalProtocolError("message properties do not fit in one frame")
        out = self._out
        out.append(method)
        out.append(header)
        if len(body) <= max_payload:
            if body:
                out.append(F.encode_body(channel, body, max_payload)[0])
        else:
            out.extend(F.encode_body(channel, body, max_payload))
        self._out_size += len(method) + len(header) + len(body) + 8 * -(-len(body) // max_payload)
        if ch.confirm:
            ch.publish_seq += 1
            tag = ch.publish_seq
            ch.unconfirmed.append(tag)
            if mandatory:
                ch.returns_pending.append((tag, exchange, routing_key))
            return tag
        return 0

    def basic_ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None:
        """Queue a consumer ``Basic.Ack``."""
        self._open_channel(channel)
        self._send(F.encode_basic_ack(channel, delivery_tag, multiple))

    def basic_nack(
        self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        """Queue ``Basic.Nack`` (RabbitMQ extension: reject with ``multiple``)."""
        self._open_channel(channel)
        self._send(F.encode_basic_nack(channel, delivery_tag, multiple, requeue))

    def basic_reject(self, channel: int, delivery_tag: int, requeue: bool = True) -> None:
        """Queue ``Basic.Reject``."""
        self._open_channel(channel)
        self._send(F.encode_basic_reject(channel, delivery_tag, requeue))

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        """Queue ``Connection.Close``; a :class:`ConnectionClosed` event follows CloseOk.

        Closing before the handshake finished, or after an error, just marks the
        connection closed: there is nobody to say goodbye to politely.
        """
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        if self.state is not ConnectionState.OPEN:
            self.state = ConnectionState.CLOSED
            return
        self._send(
            F.encode_method(
                0,
                commands.Connection.Close(
                    reply_code=reply_code, reply_text=reply_text, class_id=0, method_id=0
                ),
            )
        )
        self._channels.clear()  # spec 4.2.7: channel frames are dropped until CloseOk
        self.state = ConnectionState.CLOSING

    def connection_lost(self) -> None:
        """The transport went away (EOF or error): nothing more can be sent or received."""
        if self.state is not ConnectionState.ERROR:
            self.state = ConnectionState.CLOSED
        self._channels.clear()
        self._out.clear()
        self._out_size = 0

    # ------------------------------------------------------------- heartbeats

    def heartbeat_tick(self, now: float) -> float | None:
        """Apply the heartbeat rules at time ``now``; return when to call again.

        Queues a heartbeat frame if we sent nothing for half an interval (so the broker,
        which allows two intervals of silence, never sees us idle), and raises
        :class:`HeartbeatTimeout` (sticky) if the peer sent nothing for two intervals.
        Returns ``None`` when heartbeats are off or the connection is not open.
        """
        if self._error is not None:
            raise self._error
        interval = self.heartbeat
        if not interval or self.state not in (ConnectionState.OPEN, ConnectionState.CLOSING):
            return None
        if now - self.last_received > 2 * interval:
            raise self._fail(
                HeartbeatTimeout(
                    f"no data from the broker for {now - self.last_received:.1f} s "
                    f"(heartbeat {interval} s)",
                    reply_code=COMMAND_INVALID,
                )
            )
        half = interval / 2
        if now - self.last_sent >= half and not self._out:
            self._send(F.HEARTBEAT_FRAME)
        return min(now + half, self.last_received + 2 * interval + 0.001)


#: Methods with a dedicated call (they change state the core tracks) or not for clients.
_FORBIDDEN_IN_SEND_METHOD = (
    commands.Channel.Close,
    commands.Channel.Open,
    commands.Basic.Publish,
    commands.Connection.Start,
    commands.Connection.StartOk,
    commands.Connection.Secure,
    commands.Connection.SecureOk,
    commands.Connection.Tune,
    commands.Connection.TuneOk,
    commands.Connection.Open,
    commands.Connection.OpenOk,
    commands.Connection.Close,
    commands.Connection.CloseOk,
    commands.Connection.Blocked,
    commands.Connection.Unblocked,
)
