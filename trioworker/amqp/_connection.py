"""One AMQP connection over a trio stream: the thin I/O layer around the sans-IO core.

Three tasks live in the connection's nursery (docs/architecture.md, layering rule 3):

* the **reader** feeds received bytes to :class:`~.protocol.AMQPConnection` and dispatches
  the events to channels, consumers and confirmations — it never awaits user code, so a slow
  handler cannot stall heartbeats or confirms;
* the **writer** takes every byte queued since its last write and sends it in one
  ``send_all``: commands issued in the same scheduling tick (a burst of publishes, an ack and
  a publish) coalesce into few system calls;
* the **heartbeat** task applies the core's heartbeat rules at the times it asks for.

:func:`~._connect.connect` opens the connection and runs these tasks (:meth:`Connection.run`)
in the nursery of its ``async with`` block. Channels see the connection through
:class:`~._link.ConnectionLink` only (the writer's wake-up, publisher backpressure, the
connection's error); the reader calls their ``handle_*`` methods.

When the connection dies — socket error, EOF, a protocol error, missed heartbeats, a broker
``Connection.Close`` — the tasks do not raise into the nursery (that would cancel the
caller's code mid-flight). They record the error, fail every pending operation with it,
and end; the next operation on the connection raises it, and so does :meth:`wait_closed`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._channel import Channel
from ._errors import AMQPConnectionError, ConnectionClosedError, ConnectionLostError
from ._url import ConnectionParameters
from .protocol import (
    AMQPConnection,
    AMQPEvent,
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    LocalProtocolError,
    MethodReceived,
    ProtocolError,
    PublishConfirmed,
    RemoteProtocolError,
    Returned,
)

log = logging.getLogger("trioworker.amqp")

#: Read size: large enough that a burst of small deliveries is parsed in one go.
RECEIVE_SIZE = 256 * 1024
#: Publishers yield to the scheduler (letting the writer run) once this much is queued.
YIELD_WATER = 64 * 1024
#: Publishers wait while more than this many bytes are queued but not yet written.
HIGH_WATER = 4 * 1024 * 1024
#: How long a polite close (Connection.Close → CloseOk) may take before we just hang up.
CLOSE_TIMEOUT = 5.0


class Connection:
    """An open AMQP connection. Create it with :func:`connect`.

    All methods are safe to call from any task of the trio run that opened it.
    """

    def __init__(
        self, params: ConnectionParameters, core: AMQPConnection, stream: trio.abc.Stream
    ) -> None:
        self.params = params
        self._core = core
        self._stream = stream
        self._channels: dict[int, Channel] = {}
        self._error: AMQPConnectionError | None = None
        self._closed = trio.Event()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._writer_parked = False
        #: Socket writes so far (each carries every frame queued at the time): a measure of
        #: how well the writer coalesces.
        self.writes = 0
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._unblocked = trio.Event()
        self._unblocked.set()
        self._close_ok = trio.Event()
        self._tasks_scope = trio.CancelScope(shield=True)  # only _finish() stops the tasks
        self._running = False
        self.blocked_reason: str | None = None
        self._closed_by_peer: ConnectionClosedError | None = None

    # ------------------------------------------------------------- properties

    @property
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself in ``Connection.Start``."""
        return self._core.server_properties

    @property
    def heartbeat(self) -> int:
        """The negotiated heartbeat interval in seconds (0: none)."""
        return self._core.heartbeat

    @property
    def frame_max(self) -> int:
        """The negotiated largest frame size."""
        return self._core.frame_max

    @property
    def channel_max(self) -> int:
        """The negotiated highest channel number."""
        return self._core.channel_max

    @property
    def is_closed(self) -> bool:
        """True once the connection is closed or lost (see :attr:`error`)."""
        return self._closed.is_set()

    @property
    def is_blocked(self) -> bool:
        """True while the broker blocks publishers (``Connection.Blocked``)."""
        return not self._unblocked.is_set()

    @property
    def error(self) -> AMQPConnectionError | None:
        """Why the connection ended, or ``None`` while it is open."""
        return self._error

    @property
    def pending_output(self) -> int:
        """Bytes queued for the socket and not yet written (bounded by publisher
        backpressure: publishers wait above :data:`HIGH_WATER`)."""
        return self._core.pending_output

    # ---------------------------------------------------------------- channels

    async def open_channel(self, number: int | None = None) -> Channel:
        """Open a new channel and wait until the broker confirms it.

        ``number`` picks the channel number; by default the lowest free one, avoiding
        numbers the broker closed (their stray deliveries may still be on the way).
        """
        self.raise_if_closed()
        number = self._core.open_channel(number)
        channel = Channel(self, self._core, number)
        self._channels[number] = channel
        self.wake_writer()
        await channel.wait_open()
        return channel

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """Open a channel for the duration of an ``async with`` block, then close it."""
        ch = await self.open_channel()
        try:
            yield ch
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await ch.close()

    # ------------------------------------------------------------ life cycle

    async def wait_closed(self) -> None:
        """Wait until the connection ends; raise the error if it ended by one."""
        await self._closed.wait()
        if self._error is not None and not (
            isinstance(self._error, ConnectionClosedError) and not self._error.by_peer
        ):
            raise self._error

    async def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        """Close politely (``Connection.Close`` → ``CloseOk``), then hang up.

        Waits at most a few seconds for the broker. Never raises for a connection that is
        already gone. Cancellation-safe: a cancelled close still hangs up the socket.
        """
        if not self._closed.is_set():
            with contextlib.suppress(ProtocolError):
                self._core.close(reply_code, reply_text)
            self.wake_writer()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._close_ok.wait()
            self._finish(ConnectionClosedError(reply_code, reply_text, by_peer=False))
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def raise_if_closed(self) -> None:
        """Raise why the connection ended (:attr:`error`); do nothing while it is open."""
        if self._error is not None:
            raise self._error
        if self._closed.is_set():
            raise ConnectionClosedError(200, "connection is closed", by_peer=False)

    def _finish(self, error: AMQPConnectionError) -> None:
        """Mark the connection ended with ``error`` and fail everything waiting on it."""
        if self._closed.is_set():
            return
        self._error = error
        self._core.connection_lost()
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            channel.handle_connection_lost(error)
        self._closed.set()
        self._close_ok.set()
        self._unblocked.set()
        self._drained_lot.unpark_all()
        self._tasks_scope.cancel()

    async def run(self) -> None:
        """Run the reader, writer and heartbeat tasks until the connection ends.

        :func:`connect` runs this in the nursery of its block; it never raises for a lost
        connection (the error is recorded, see the module docstring), and ends when
        :meth:`close` or a failure finishes the connection — not when it is cancelled from
        outside: only the connection's own end stops its tasks. Runs once per connection.
        """
        if self._running:
            raise LocalProtocolError("the connection's tasks are already running")
        self._running = True
        with self._tasks_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)

    # ----------------------------------------------------------------- writer

    def wake_writer(self) -> None:
        """Tell the writer frames were queued in the core. Never blocks; cheap when the
        writer is already awake, so callers call it after every command."""
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark_all()

    async def wait_writable(self) -> None:
        """Backpressure for publishers: wait while the broker blocks us (``Connection.
        Blocked``), or while more than :data:`HIGH_WATER` bytes are queued for the socket
        (until the writer drained half). Raises the connection's error if it ends meanwhile.

        Always a cancellation point, but it yields to the scheduler only once
        :data:`YIELD_WATER` bytes are queued: yielding on every publish would hand the
        writer one message at a time (one ``send`` per message); yielding per 64 KiB lets
        it write big coalesced chunks.
        """
        pending = self._core.pending_output
        if pending < YIELD_WATER and self._unblocked.is_set():
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        if pending > HIGH_WATER or not self._unblocked.is_set():
            while not self._closed.is_set():
                if not self._unblocked.is_set():
                    await self._unblocked.wait()
                elif self._core.pending_output > HIGH_WATER:
                    self.wake_writer()
                    await self._drained_lot.park()
                else:
                    break
            self.raise_if_closed()
        else:
            await trio.lowlevel.checkpoint()

    async def _writer(self) -> None:
        core = self._core
        stream = self._stream
        try:
            while True:
                data = core.data_to_send(trio.current_time())
                if data:
                    await stream.send_all(data)
                    self.writes += 1
                    if core.pending_output <= HIGH_WATER // 2:
                        self._drained_lot.unpark_all()
                else:
                    self._drained_lot.unpark_all()
                    self._writer_parked = True
                    await self._writer_lot.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._finish(ConnectionLostError(f"sending to the broker failed: {exc!r}"))

    # ----------------------------------------------------------------- reader

    async def _reader(self) -> None:
        core = self._core
        stream = self._stream
        dispatch = self._dispatch
        try:
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise ConnectionLostError("the broker closed the TCP connection")
                events = core.receive_data(data, trio.current_time())
                if events:
                    dispatch(events)
                    if self._closed_by_peer is not None:
                        await self._flush_best_effort()
                        self._finish(self._closed_by_peer)
                        return
                if core.pending_output:
                    self.wake_writer()
        except RemoteProtocolError as exc:
            log.error("closing AMQP connection to %s: %s", self.params.safe_url(), exc)
            await self._flush_best_effort()
            self._finish_lost(ConnectionLostError(f"protocol error from the broker: {exc}"), exc)
        except ConnectionLostError as exc:
            self._finish(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._finish_lost(
                ConnectionLostError(f"receiving from the broker failed: {exc!r}"), exc
            )

    def _finish_lost(self, error: ConnectionLostError, cause: BaseException) -> None:
        error.__cause__ = cause
        self._finish(error)

    async def _flush_best_effort(self) -> None:
        """Send what is queued (the Connection.Close the core queued on an error), briefly."""
        data = self._core.data_to_send()
        if data:
            quiet = contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError
            )
            with trio.move_on_after(1.0), quiet:
                await self._stream.send_all(data)

    def _dispatch(self, events: list[AMQPEvent]) -> None:
        channels = self._channels
        for event in events:
            # Deliveries dominate: test for them first.
            if type(event) is Delivery:
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_delivery(event)
            elif type(event) is PublishConfirmed:
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_confirm(event)
            elif isinstance(event, MethodReceived):
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_method(event.method)
            elif isinstance(event, Returned):
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_return(event)
            elif isinstance(event, ConsumerCancelled):
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_consumer_cancelled(event.consumer_tag)
            elif isinstance(event, ChannelOpened):
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_opened()
            elif isinstance(event, ChannelClosed):
                if (channel := channels.pop(event.channel, None)) is not None:
                    channel.handle_closed(event)
            elif isinstance(event, ChannelFlow):
                if (channel := channels.get(event.channel)) is not None:
                    channel.handle_flow(event.active)
            elif isinstance(event, ConnectionBlocked):
                log.warning(
                    "broker blocked publishing on %s: %s", self.params.safe_url(), event.reason
                )
                self.blocked_reason = event.reason
                if self._unblocked.is_set():
                    self._unblocked = trio.Event()
            elif isinstance(event, ConnectionUnblocked):
                log.info("broker unblocked publishing on %s", self.params.safe_url())
                self.blocked_reason = None
                self._unblocked.set()
            elif isinstance(event, ConnectionClosed):
                if event.by_peer:
                    log.warning(
                        "broker closed the connection %s: %s %s",
                        self.params.safe_url(),
                        event.reply_code,
                        event.reply_text,
                    )
                    # Finished by the reader once the CloseOk the core queued is sent.
                    self._closed_by_peer = ConnectionClosedError(event.reply_code, event.reply_text)
                else:
                    self._close_ok.set()

    # -------------------------------------------------------------- heartbeat

    async def _heartbeat(self) -> None:
        core = self._core
        try:
            while True:
                deadline = core.heartbeat_tick(trio.current_time())
                if core.pending_output:
                    self.wake_writer()
                if deadline is None:
                    return
                await trio.sleep_until(deadline)
        except RemoteProtocolError as exc:
            log.error("AMQP connection to %s is dead: %s", self.params.safe_url(), exc)
            self._finish_lost(ConnectionLostError(str(exc)), exc)
