"""One AMQP connection over a trio stream: the thin I/O layer around the sans-IO core.

Three tasks live in the connection's nursery (design.md, layering rule 3):

* the **reader** feeds received bytes to :class:`~.protocol.AMQPConnection` and dispatches
  the events to channels, consumers and confirmations — it never awaits user code, so a slow
  handler cannot stall heartbeats or confirms;
* the **writer** takes every byte queued since its last write and sends it in one
  ``send_all``: commands issued in the same scheduling tick (a burst of publishes, an ack and
  a publish) coalesce into few system calls;
* the **heartbeat** task applies the core's heartbeat rules at the times it asks for.

When the connection dies — socket error, EOF, a protocol error, missed heartbeats, a broker
``Connection.Close`` — the tasks do not raise into the nursery (that would cancel the
caller's code mid-flight). They record the error, fail every pending operation with it,
and end; the next operation on the connection raises it, and so does :meth:`wait_closed`.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._version import __version__
from ._channel import Channel
from ._errors import (
    AMQPConnectionError,
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectionTimeout,
    NotAMQPServerError,
    VirtualHostError,
)
from ._url import ConnectionParameters, default_url, parse_url
from .protocol import (
    AMQPConnection,
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


def default_client_properties(connection_name: str | None = None) -> dict[str, Any]:
    """The client properties we announce; capabilities tell RabbitMQ what we understand."""
    props: dict[str, Any] = {
        "product": "trioworker",
        "version": __version__,
        "platform": f"Python {platform.python_version()} (trio {trio.__version__})",
        "information": "https://github.com/trioworker/trioworker",
        "capabilities": {
            "publisher_confirms": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "basic.nack": True,
            "authentication_failure_close": True,
            "exchange_exchange_bindings": True,
            "per_consumer_qos": True,
        },
    }
    if connection_name:
        props["connection_name"] = connection_name
    return props


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

    # ---------------------------------------------------------------- channels

    async def open_channel(self, number: int | None = None) -> Channel:
        """Open a new channel and wait until the broker confirms it.

        ``number`` picks the channel number; by default the lowest free one, avoiding
        numbers the broker closed (their stray deliveries may still be on the way).
        """
        self._raise_if_closed()
        number = self._core.open_channel(number)
        channel = Channel(self, number)
        self._channels[number] = channel
        self._wake_writer()
        await channel._wait_open()
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
            self._wake_writer()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._close_ok.wait()
            self._finish(ConnectionClosedError(reply_code, reply_text, by_peer=False))
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def _raise_if_closed(self) -> None:
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
            channel._on_connection_lost(error)
        self._closed.set()
        self._close_ok.set()
        self._unblocked.set()
        self._drained_lot.unpark_all()
        self._tasks_scope.cancel()

    async def _run_tasks(self) -> None:
        with self._tasks_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)

    # ----------------------------------------------------------------- writer

    def _wake_writer(self) -> None:
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark_all()

    async def _wait_writable(self) -> None:
        """Backpressure for publishers: wait while the broker blocks us or too much is queued.

        Always a cancellation point. It yields to the scheduler only once
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
                    self._wake_writer()
                    await self._drained_lot.park()
                else:
                    break
            self._raise_if_closed()
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
                    self._wake_writer()
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

    def _dispatch(self, events: list[Event]) -> None:
        channels = self._channels
        for event in events:
            # Deliveries dominate: test for them first.
            if type(event) is Delivery:
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_delivery(event)
            elif type(event) is PublishConfirmed:
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_confirm(event)
            elif isinstance(event, MethodReceived):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_method(event.method)
            elif isinstance(event, Returned):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_return(event)
            elif isinstance(event, ConsumerCancelled):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_consumer_cancelled(event.consumer_tag)
            elif isinstance(event, ChannelOpened):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_open()
            elif isinstance(event, ChannelClosed):
                channel = channels.pop(event.channel, None)
                if channel is not None:
                    channel._on_closed(event)
            elif isinstance(event, ChannelFlow):
                channel = channels.get(event.channel)
                if channel is not None:
                    channel._on_flow(event.active)
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
                    self._wake_writer()
                if deadline is None:
                    return
                await trio.sleep_until(deadline)
        except RemoteProtocolError as exc:
            log.error("AMQP connection to %s is dead: %s", self.params.safe_url(), exc)
            self._finish_lost(ConnectionLostError(str(exc)), exc)


async def _open_stream(
    params: ConnectionParameters, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(params.host, params.port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {params.safe_url()}: {exc}") from exc
    if params.tls or ssl_context is not None:
        context = ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(stream, context, server_hostname=params.host)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            await trio.aclose_forcefully(stream)
            cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
            raise ConnectError(f"TLS handshake with {params.safe_url()} failed: {cause}") from exc
        stream = tls
    return stream


async def _handshake(conn: Connection) -> None:
    """Run the AMQP handshake up to ``Connection.OpenOk`` and map failures to clear errors."""
    core = conn._core
    stream = conn._stream
    params = conn.params
    core.initiate()
    started = False
    try:
        await stream.send_all(core.data_to_send())
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                if not started:
                    raise NotAMQPServerError(
                        f"{params.host}:{params.port} closed the connection before the AMQP "
                        "handshake: is it an AMQP 0-9-1 broker?"
                    )
                raise ConnectionLostError(
                    f"{params.safe_url()} closed the connection during the AMQP handshake"
                )
            try:
                events = core.receive_data(data, trio.current_time())
            except RemoteProtocolError as exc:
                if not started:
                    raise NotAMQPServerError(
                        f"{params.host}:{params.port} does not speak AMQP 0-9-1: {exc}"
                    ) from exc
                raise ConnectionLostError(f"protocol error during the handshake: {exc}") from exc
            started = started or core.state.value != "await_start"
            out = core.data_to_send(trio.current_time())
            if out:
                await stream.send_all(out)
            for event in events:
                if isinstance(event, ConnectionOpened):
                    return
                if isinstance(event, ConnectionClosed):
                    if event.reply_code == 403:
                        raise AuthenticationError(
                            f"{params.safe_url()} refused the credentials of user "
                            f"{params.username!r}: {event.reply_text}"
                        )
                    if event.reply_code == 530:
                        raise VirtualHostError(
                            f"cannot open vhost {params.virtual_host!r} on "
                            f"{params.safe_url()}: {event.reply_text}"
                        )
                    raise ConnectionClosedError(event.reply_code, event.reply_text)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if not started:
            raise NotAMQPServerError(
                f"{params.host}:{params.port} dropped the connection before the AMQP handshake "
                f"({exc!r}): is it an AMQP 0-9-1 broker?"
            ) from exc
        raise ConnectionLostError(f"connection lost during the AMQP handshake: {exc!r}") from exc


@asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    client_properties: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Connection]:
    """Open an AMQP connection for the duration of an ``async with`` block.

    ``url`` defaults to ``$TRIOWORKER_AMQP_URL`` or the local broker. Keyword ``options``
    override the URL's query options (``heartbeat=``, ``connection_timeout=``, ...).
    ``amqps://`` URLs (or an ``ssl_context``) use TLS; verification is on unless the
    context you pass turns it off.

    Raises, within ``connection_timeout``: :class:`ConnectError`,
    :class:`NotAMQPServerError`, :class:`AuthenticationError`, :class:`VirtualHostError`,
    :class:`ConnectionTimeout`. Leaving the block closes the connection politely.
    """
    params = parse_url(url or default_url())
    if options:
        import dataclasses

        params = dataclasses.replace(params, **options)
    props = default_client_properties(params.connection_name)
    if client_properties:
        props.update(client_properties)
    core = AMQPConnection(
        username=params.username,
        password=params.password,
        virtual_host=params.virtual_host,
        heartbeat=params.heartbeat,
        frame_max=params.frame_max,
        channel_max=params.channel_max,
        client_properties=props,
    )
    try:
        with trio.fail_after(params.connection_timeout):
            stream = await _open_stream(params, ssl_context)
            conn = Connection(params, core, stream)
            try:
                await _handshake(conn)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise ConnectionTimeout(
            f"no AMQP connection to {params.safe_url()} within {params.connection_timeout} s"
        ) from None
    # The connection's own tasks never raise (they record errors instead), so the only
    # exception that can cross this nursery is the caller's. It is caught here and raised
    # again after the nursery closed, so it reaches the caller as itself, not wrapped in an
    # ExceptionGroup: `except NotFoundError:` around the block keeps working.
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn._run_tasks)
        try:
            yield conn
        except BaseException as exc:
            body_error = exc
        finally:
            with trio.CancelScope(shield=True):
                await conn.close()
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
