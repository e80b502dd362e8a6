"""The accept loop: hypercorn's trio protocol per connection, at most N connections open.

hypercorn has no cap on open connections (pgjones/hypercorn#81): its trio worker accepts
as fast as clients connect and starts a task per connection, so 1,000 slow clients hold
1,000 file descriptors, and 100,000 exhaust the process. The cap cannot live in the ASGI
app either: a connection reaches ASGI only once its request headers are complete, and a
client that never finishes them holds its socket all the same.

So this module does what ``hypercorn.trio.serve`` does, minus what the backend does not
use (lifespan, TLS, QUIC, worker restarts), with one change: the listener takes a slot of
a :class:`ConnectionLimit` *before* calling ``accept()``. At the limit it stops
accepting; new clients wait in the kernel's listen queue (``backlog`` of them; past that
the kernel drops their SYNs and they retry), costing no descriptor here until a slot
frees. Each connection is still run by hypercorn's own ``TCPServer``, so HTTP behaviour,
timeouts and the graceful stop are hypercorn's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from ._deflate import inflating_at_most
from ._deflate import install as install_bounded_deflate

if TYPE_CHECKING:
    from hypercorn.typing import Framework

__all__ = ["ConnectionLimit", "serve"]

log = logging.getLogger("trioworker.http")

#: At most one "connection limit reached" warning per this many seconds.
WARN_EVERY = 60.0
#: Seconds past the grace period after which the sockets of connections still open are
#: closed under their tasks (see :func:`_close_stuck`).
STUCK_AFTER = 3.0


class ConnectionLimit:
    """At most ``maximum`` connections open at once; ``open`` is how many are.

    A slot is taken before ``accept()`` and given back once the connection's socket is
    closed, so the number of accepted sockets alive never exceeds ``maximum``.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.open = 0
        self._slots = trio.Semaphore(maximum)
        self._warned_at: float | None = None

    async def acquire(self) -> None:
        if self._slots.value == 0:
            self._warn_full()
        await self._slots.acquire()

    def opened(self) -> None:
        self.open += 1

    def release(self, *, opened: bool) -> None:
        if opened:
            self.open -= 1
        self._slots.release()

    def _warn_full(self) -> None:
        # Under a flood, slots free and fill all the time: one line a minute says it.
        now = trio.current_time()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "HTTP server at its connection limit (%d open): new connections wait "
                "in the listen queue (app.http.max_connections)",
                self.maximum,
            )


class _LimitedListener(trio.abc.Listener[trio.SocketStream]):
    """A ``SocketListener`` that accepts only while the limit has a free slot."""

    def __init__(self, listener: trio.SocketListener, limit: ConnectionLimit) -> None:
        self._listener = listener
        self._limit = limit

    async def accept(self) -> trio.SocketStream:
        await self._limit.acquire()
        try:
            stream = await self._listener.accept()
        except BaseException:
            self._limit.release(opened=False)
            raise
        self._limit.opened()
        return stream

    async def aclose(self) -> None:
        await self._listener.aclose()


class _TCPServer(TCPServer):
    """hypercorn's connection, minus a linger and a race.

    - The linger: hypercorn stops reading at the client's EOF but keeps its idle timer
      running, so a client that connects and closes without a request (a TCP health
      probe, a scanner) holds the connection, and here its slot, until
      ``keep_alive_timeout`` expires.
    - The race: hypercorn's ``_close()`` sends the EOF without its send lock. When the app's
      task closes a connection (a refused WebSocket handshake, say) while the reader's task
      is answering the client (a close frame), the reader's ``send_all`` meets the EOF in
      progress and raises ``BusyResourceError`` — which escaped hypercorn's task group and
      stopped the whole HTTP server. The connection is closing: what it was sending is
      dropped, as for a client already gone.
    """

    async def protocol_send(self, event: Event) -> None:
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        await super()._read_data()
        # The reader has told the protocol the connection is closed; nothing is left for
        # the idle timer to wait for.
        await self.idle_task.stop()


async def _serve_connection(
    limit: ConnectionLimit,
    connection: Callable[[trio.SocketStream], Awaitable[None]],
    streams: set[trio.SocketStream],
    stream: trio.SocketStream,
) -> None:
    """Run one connection; close its socket, *then* free its slot (no descriptor over)."""
    streams.add(stream)
    try:
        await connection(stream)
    finally:
        streams.discard(stream)
        try:
            await trio.aclose_forcefully(stream)
        finally:
            limit.release(opened=True)


async def _close_stuck(streams: set[trio.SocketStream], done: trio.Event, at: float) -> None:
    """Past ``at``, close the sockets of the connections still open, under their tasks.

    hypercorn writes to a socket under a shield (a frame is never cut in half), so a write
    to a client that stopped reading — a WebSocket client's full receive window, a huge
    response nobody reads — waits past any cancellation, the grace period's included, and
    would hold the server's stop, hence the app's, forever. Closing the socket wakes that
    write (trio's ``notify_closing``): it fails, hypercorn sees the connection closed, and
    the task ends.
    """
    with trio.move_on_at(at):
        await done.wait()
        return
    if streams:
        log.warning(
            "%d HTTP connection(s) still open %.0f s after the grace period (a client not "
            "reading?): closed",
            len(streams),
            STUCK_AFTER,
        )
    for stream in list(streams):
        stream.socket.close()


async def serve(
    asgi: Framework,
    config: Config,
    limit: ConnectionLimit,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``asgi`` on ``config.bind`` until ``shutdown_trigger`` returns.

    Binding happens before ``task_status.started(binds)`` (``binds`` like
    ``["http://127.0.0.1:8080"]``), so a taken port raises ``OSError`` to the starter.
    On the trigger: stop accepting (the listening sockets close), close idle keep-alive
    connections, and give requests in flight ``config.graceful_timeout`` seconds before
    cancelling them — what hypercorn's own ``serve`` does; connections still open
    :data:`STUCK_AFTER` seconds later (a write to a client that does not read ignores
    cancellation) have their sockets closed under them, so the stop always ends.
    """
    install_bounded_deflate()
    app = wrap_app(asgi, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    sockets = config.create_sockets().insecure_sockets
    listeners: list[trio.abc.Listener[trio.SocketStream]] = []
    binds: list[str] = []
    try:
        for sock in sockets:
            sock.listen(config.backlog)
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            listeners.append(_LimitedListener(listener, limit))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise

    async def connection(stream: trio.SocketStream) -> None:
        # TCPServer is typed for TLS streams; a plain SocketStream is what it gets here,
        # as from hypercorn's own accept loop (it tells them apart by attribute).
        server = _TCPServer(app, config, context, ConnectionState({}), cast("Any", stream))
        with inflating_at_most(config.websocket_max_message_size):  # see _deflate
            await server.run()

    streams: set[trio.SocketStream] = set()
    handler = partial(_serve_connection, limit, connection, streams)
    serve_all = partial(trio.serve_listeners, handler, listeners)
    done = trio.Event()
    async with trio.open_nursery() as reaper:
        try:
            async with trio.open_nursery() as connections:
                try:
                    async with trio.open_nursery() as accepting:
                        accepting.start_soon(partial(serve_all, handler_nursery=connections))
                        task_status.started(binds)
                        await shutdown_trigger()
                        accepting.cancel_scope.cancel()  # serve_listeners closes the listeners
                finally:
                    # Idle connections close on this; requests in flight (and WebSocket
                    # handlers) get the grace period.
                    await context.terminated.set()
                    deadline = trio.current_time() + config.graceful_timeout
                    connections.cancel_scope.deadline = deadline
                    reaper.start_soon(_close_stuck, streams, done, deadline + STUCK_AFTER)
        finally:
            done.set()
