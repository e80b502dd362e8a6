"""The AMQP 0-9-1 client connection as a state machine, without I/O.

:class:`AMQPConnection` takes bytes from the peer (:meth:`~AMQPConnection.receive_data`)
and returns typed events; it takes commands (:meth:`~AMQPConnection.publish`,
:meth:`~AMQPConnection.send_method`, ...) and queues the bytes they produce for
:meth:`~AMQPConnection.data_to_send`. It imports no trio, no socket and no clock: time
enters as arguments (``now``) so heartbeat rules are testable without waiting.

The pieces, one concept a module (docs/architecture.md has the map):

* :mod:`._receive` — the parse loop and what each arriving frame does;
* :mod:`._state` — the states, and the tables of which method may arrive in which state;
* :mod:`._content` — assembling a message from its method, header and body frames;
* :mod:`._confirms` — publisher confirm bookkeeping;
* :mod:`._heartbeat` — the heartbeat rules; :mod:`._handshake` — the handshake's answers;
* :mod:`._frames` / :mod:`._methods` — the codec and the method ids.

This module holds the object itself: construction, the output queue, and the commands,
each of which checks the state allows it (else :class:`LocalProtocolError`, and nothing
is queued).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pamqp import base, commands

from . import _frames as F
from ._channel import ChannelRecord
from ._errors import HeartbeatTimeout, LocalProtocolError, ProtocolError
from ._handshake import DEFAULT_CHANNEL_MAX, DEFAULT_FRAME_MAX, FRAME_MIN_SIZE
from ._heartbeat import heartbeat_due
from ._receive import Receiver
from ._state import ChannelState, ConnectionState

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "AMQPConnection"]

#: RabbitMQ's own default ``max_message_size`` (128 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


class AMQPConnection(Receiver):
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
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if frame_max and frame_max < FRAME_MIN_SIZE:
            raise LocalProtocolError("frame_max must be at least 4096 (spec frame-min-size)")
        if max_message_size < 1:
            raise LocalProtocolError("max_message_size must be at least 1 byte")
        #: The largest body accepted: a content header announcing more closes the
        #: connection (:class:`RemoteProtocolError`, 506) before any of it is buffered.
        self.max_message_size = max_message_size
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
        self._channels: dict[int, ChannelRecord] = {}
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

    def _open_channel(self, channel: int) -> ChannelRecord:
        if self._error is not None:
            raise self._error
        ch = self._channels.get(channel)
        if ch is None or ch.state is not ChannelState.OPEN:
            state = "not open" if ch is None else ch.state.value
            raise LocalProtocolError(f"channel {channel} is {state}")
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"connection is not open (state: {self.state.value})")
        return ch

    def initiate(self) -> None:
        """Queue the protocol header that opens the conversation."""
        if self.state is not ConnectionState.IDLE:
            raise LocalProtocolError("initiate() was already called")
        self._send(F.PROTOCOL_HEADER)
        self.state = ConnectionState.AWAIT_START

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
        ch = self._channels[channel] = ChannelRecord(channel)
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
        return ch is not None and ch.confirms is not None

    def unconfirmed(self, channel: int) -> int:
        """How many publishes on ``channel`` still wait for a confirm."""
        ch = self._channels.get(channel)
        return 0 if ch is None or ch.confirms is None else len(ch.confirms.unconfirmed)

    def close_channel(self, channel: int, reply_code: int = 200, reply_text: str = "") -> None:
        """Queue ``Channel.Close``; the number stays taken until ``CloseOk`` arrives."""
        if self._error is not None:
            raise self._error
        ch = self._channels.get(channel)
        if ch is None or ch.state is ChannelState.CLOSING:
            raise LocalProtocolError(f"channel {channel} is not open")
        self._check_usable()
        ch.state = ChannelState.CLOSING
        ch.awaiting = None
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
        confirms = ch.confirms
        if confirms is not None:
            return confirms.published(exchange, routing_key, mandatory)
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
        """Apply the heartbeat rules (:mod:`._heartbeat`) at ``now``; return when to call again.

        Queues a heartbeat frame if we sent nothing for half an interval, and raises
        :class:`HeartbeatTimeout` (sticky) if the peer sent nothing for two intervals.
        Returns ``None`` when heartbeats are off or the connection is not open.
        """
        if self._error is not None:
            raise self._error
        interval = self.heartbeat
        if not interval or self.state not in (ConnectionState.OPEN, ConnectionState.CLOSING):
            return None
        try:
            beat, next_call = heartbeat_due(
                now, interval, self.last_received, self.last_sent, bool(self._out)
            )
        except HeartbeatTimeout as exc:
            raise self._fail(exc) from None
        if beat:
            self._send(F.HEARTBEAT_FRAME)
        return next_call


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
