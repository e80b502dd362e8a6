"""One client connection, on the broker's side: bytes in, frames out, no I/O.

:meth:`ServerConnection.receive_data` cuts the byte stream into frames and applies each;
what the broker answers accumulates in the output, which :meth:`data_to_send` hands to the
transport (:mod:`._server`). Deliveries pushed by queues land in the same output.

The handshake is RabbitMQ's: the protocol header (anything else is answered with our
header and a hang-up), ``Start``/``StartOk`` with PLAIN credentials (refused: 403
ACCESS_REFUSED, then close), ``Tune``/``TuneOk``, ``Open`` (an unknown vhost: 530
NOT_ALLOWED). Errors close what they concern: a channel error closes its channel (frames
still arriving on it are discarded until the client's ``Channel.CloseOk``), a connection
error the connection (``Connection.Close``, then everything but ``CloseOk`` is discarded).
A frame larger than ``frame_max``, a bad end octet, an unknown frame type: 501; a method
that does not decode: 502; nothing a client sends makes the broker raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import base, commands

from ._channel import ServerChannel
from ._content import Content, Entry
from ._errors import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    CONNECTION_FORCED,
    FRAME_ERROR,
    AMQPException,
    ChannelError,
    ConnectionError,
)
from ._frames import (
    BASIC_ACK,
    BASIC_NACK,
    BASIC_PUBLISH,
    BASIC_REJECT,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    PROTOCOL_HEADER,
    decode_method,
    decode_publish,
    decode_settle,
    encode_method,
    frame_header,
    method_index,
)
from ._handshake import ConnectionState, Handshake
from ._methods import handle_method
from ._publishes import Publishes
from ._queue import Queue
from ._vhost import VHost

__all__ = ["ConnectionState", "ServerConnection"]

#: Deliveries stop while more than this many bytes wait for the client to read them.
HIGH_WATER = 1024 * 1024
_CHANNEL_OPEN = commands.Channel.Open.index
_CHANNEL_CLOSE = commands.Channel.Close.index
_CHANNEL_CLOSE_OK = commands.Channel.CloseOk.index


class ServerConnection(Handshake):
    """The broker's side of one connection (see the module docstring)."""

    def __init__(
        self,
        *,
        users: dict[str, str],
        vhosts: Callable[[str], VHost | None],
        server_properties: dict[str, Any],
        frame_max: int,
        channel_max: int,
        heartbeat: int,
        max_message_size: int,
        record: Callable[[Content], None],
    ) -> None:
        self.state = ConnectionState.HEADER
        self._users = users
        self._vhosts = vhosts
        self._server_properties = server_properties
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self._max_message_size = max_message_size
        self._record = record
        self.username = ""
        self.cancel_notify = False
        self.client_properties: dict[str, Any] = {}
        self.vhost: VHost | None = None
        self.channels: dict[int, ServerChannel] = {}
        self._closing_channels: set[int] = set()
        self._buffer = b""
        self._out: list[bytes] = []
        self.pending_output = 0
        self._confirming: list[Publishes] = []
        #: Called when output was queued (the transport's writer wakes up).
        self.on_output: Callable[[], None] = lambda: None
        self.released = False
        self._held_back = False

    # ------------------------------------------------------------------ output

    @property
    def writable(self) -> bool:
        if (
            self.pending_output < HIGH_WATER
            and self.state is ConnectionState.OPENED
            and not self.released  # its channels are requeueing: not into each other
        ):
            return True
        self._held_back = True  # a queue kept a delivery: resume_deliveries() after a write
        return False

    def resume_deliveries(self) -> None:
        """The output was written: queues that held deliveries back may push them now."""
        if self._held_back and self.state is ConnectionState.OPENED:
            self._held_back = False
            for channel in list(self.channels.values()):
                channel.resume()

    def unacked_of(self, queue: Queue) -> list[Entry]:
        """The deliveries from ``queue`` this connection's channels hold."""
        return [e for ch in self.channels.values() for e in ch.unacked_of(queue)]

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self.pending_output += len(data)
        self.on_output()

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one chunk."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.pending_output = 0
        return data

    def confirms_pending(self, channel: Publishes) -> None:
        self._confirming.append(channel)

    @property
    def finished(self) -> bool:
        """Nothing more will be read: hang up once the output is written."""
        return self.state is ConnectionState.CLOSED

    # ------------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        """Apply every complete frame in ``data`` (and what was left over before)."""
        if self.state is ConnectionState.CLOSED:
            return
        if self._buffer:
            data = self._buffer + data
        try:
            used = self._parse(data)
        except ConnectionError as exc:
            # The frame boundaries are lost: nothing after this can be read.
            self.fail(exc)
            self.state = ConnectionState.CLOSED
            self._buffer = b""
            return
        finally:
            confirming, self._confirming = self._confirming, []
            for channel in confirming:
                channel.flush_confirms()
        self._buffer = data[used:] if used < len(data) else b""

    def _parse(self, data: bytes) -> int:
        size = len(data)
        pos = 0
        if self.state is ConnectionState.HEADER:
            if size < 8:
                if data != PROTOCOL_HEADER[:size]:
                    self._refuse_protocol()
                    return size
                return 0
            if data[:8] != PROTOCOL_HEADER:
                self._refuse_protocol()
                return size
            self._start()
            pos = 8
        while size - pos >= 7 and self.state is not ConnectionState.CLOSED:
            kind, number, payload = frame_header.unpack_from(data, pos)
            if payload + FRAME_OVERHEAD > self.frame_max:
                raise ConnectionError(
                    FRAME_ERROR, f"frame size {payload} exceeds frame_max {self.frame_max}"
                )
            end = pos + 7 + payload
            if end >= size:
                break
            if data[end] != FRAME_END:
                raise ConnectionError(FRAME_ERROR, f"frame end octet is {data[end]:#04x}")
            start = pos + 7
            try:
                if number == 0:
                    self._on_channel_zero(kind, data, pos, start, end)
                else:
                    self._on_channel_frame(kind, number, data, pos, start, end)
            except ConnectionError as exc:
                # The frame was whole: later frames are still read (and discarded, but
                # for the client's CloseOk).
                if not exc.method_index and kind == FRAME_METHOD and end - start >= 4:
                    exc.method_index = method_index.unpack_from(data, start)[0]
                self.fail(exc)
            pos = end + 1
        return pos

    # ---------------------------------------------------------------- channels

    def _on_channel_frame(
        self, kind: int, number: int, data: bytes, pos: int, start: int, end: int
    ) -> None:
        if self.state is ConnectionState.CLOSING:
            return
        if self.state is not ConnectionState.OPENED:
            raise ConnectionError(COMMAND_INVALID, f"frame on channel {number} before open")
        ch = self.channels.get(number)
        if ch is None:
            self._on_closed_channel(kind, number, data, pos, start, end)
            return
        try:
            if kind == FRAME_METHOD:
                if end - start < 4:
                    raise ConnectionError(FRAME_ERROR, "method frame too short")
                index = method_index.unpack_from(data, start)[0]
                if index == BASIC_PUBLISH:
                    ch.expect_method()
                    ch.on_publish(*decode_publish(data, start + 4, end))
                elif index in (BASIC_ACK, BASIC_NACK, BASIC_REJECT):
                    ch.expect_method()
                    tag, bits = decode_settle(data, start + 4, end)
                    if index == BASIC_ACK:
                        ch.settle(tag, bool(bits & 1), ack=True, requeue=False)
                    elif index == BASIC_NACK:
                        ch.settle(tag, bool(bits & 1), ack=False, requeue=bool(bits & 2))
                    else:
                        ch.settle(tag, False, ack=False, requeue=bool(bits & 1))
                else:
                    self._on_channel_method(ch, decode_method(data[pos : end + 1]))
            elif kind == FRAME_HEADER:
                ch.on_header(data, start, end)
            elif kind == FRAME_BODY:
                ch.on_body(data[start:end])
            elif kind == FRAME_HEARTBEAT:
                raise ConnectionError(FRAME_ERROR, f"heartbeat frame on channel {number}")
            else:
                raise ConnectionError(FRAME_ERROR, f"unknown frame type {kind}")
        except ChannelError as exc:
            self._close_channel(ch, exc, data, start, end, kind)

    def _on_channel_method(self, ch: ServerChannel, method: base.Frame) -> None:
        ch.expect_method()
        if isinstance(method, commands.Channel.Close):
            ch.send(commands.Channel.CloseOk())
            self._forget(ch)
        elif isinstance(method, commands.Channel.Open):
            raise ConnectionError(CHANNEL_ERROR, "second 'channel.open' seen")
        else:
            handle_method(ch, method)

    def _on_closed_channel(
        self, kind: int, number: int, data: bytes, pos: int, start: int, end: int
    ) -> None:
        index = method_index.unpack_from(data, start)[0] if kind == FRAME_METHOD else 0
        if number in self._closing_channels:
            # We closed it: discard until the client's CloseOk (or its own Close).
            if index == _CHANNEL_CLOSE:
                self.send(encode_method(number, commands.Channel.CloseOk()))
            if index in (_CHANNEL_CLOSE, _CHANNEL_CLOSE_OK):
                self._closing_channels.discard(number)
            return
        if index == _CHANNEL_CLOSE_OK:
            return  # both sides closed at once
        if index != _CHANNEL_OPEN:
            raise ConnectionError(CHANNEL_ERROR, "expected 'channel.open'")
        if number > self.channel_max:
            raise ConnectionError(
                CHANNEL_ERROR, f"channel {number} is above channel_max {self.channel_max}"
            )
        assert self.vhost is not None
        self.channels[number] = ServerChannel(
            number,
            self,
            self.vhost,
            self,
            max_message_size=self._max_message_size,
            record=self._record,
        )
        self.send(encode_method(number, commands.Channel.OpenOk()))

    def _close_channel(
        self, ch: ServerChannel, error: AMQPException, data: bytes, start: int, end: int, kind: int
    ) -> None:
        index = error.method_index
        if not index and kind == FRAME_METHOD:
            index = method_index.unpack_from(data, start)[0]
        elif not index and kind in (FRAME_HEADER, FRAME_BODY):
            index = BASIC_PUBLISH
        ch.send(
            commands.Channel.Close(
                reply_code=error.reply_code,
                reply_text=_short(error.reply_text),
                class_id=index >> 16,
                method_id=index & 0xFFFF,
            )
        )
        self._forget(ch)
        self._closing_channels.add(ch.number)

    def _forget(self, ch: ServerChannel) -> None:
        self.channels.pop(ch.number, None)
        if ch in self._confirming:
            self._confirming.remove(ch)
        ch.release()

    # -------------------------------------------------------------------- end

    def fail(self, error: AMQPException) -> None:
        """A connection error: ``Connection.Close`` with it, then discard until CloseOk."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        if self.state is ConnectionState.HEADER:
            self.state = ConnectionState.CLOSED
            return
        self._confirming = []
        index = error.method_index
        self.send(
            encode_method(
                0,
                commands.Connection.Close(
                    reply_code=error.reply_code,
                    reply_text=_short(error.reply_text),
                    class_id=index >> 16,
                    method_id=index & 0xFFFF,
                ),
            )
        )
        self.release()
        self.state = ConnectionState.CLOSING

    def close_forced(self, reason: str) -> None:
        """The broker shuts down: 320 CONNECTION_FORCED, as ``rabbitmqctl stop`` sends."""
        self.fail(
            AMQPException(
                CONNECTION_FORCED, f"broker forced connection closure with reason '{reason}'"
            )
        )

    def release(self) -> None:
        """The connection is ending: every channel lets go (requeue), exclusive queues go."""
        if self.released:
            return
        self.released = True
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            channel.release()
        if self.vhost is not None:
            self.vhost.owner_gone(self)

    def lost(self) -> None:
        """The transport is gone (the client hung up, or missed heartbeats)."""
        self.release()
        self.state = ConnectionState.CLOSED


def _short(text: str) -> str:
    """A reply text fits a short string: longer ones are cut to 252 bytes and ``...``,
    as RabbitMQ cuts them."""
    raw = text.encode("utf-8")
    if len(raw) <= 255:
        return text
    return raw[:252].decode("utf-8", "ignore") + "..."
