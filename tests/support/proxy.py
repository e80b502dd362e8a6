"""A trio TCP proxy that sits between the client under test and RabbitMQ to inject faults.

Faults are injected for real (docs/testing.md): the client sees genuine resets,
closed sockets, silent peers and corrupted bytes on a real TCP connection, not a mock.

Usage::

    async with open_tcp_proxy("127.0.0.1", 5672) as proxy:
        url = proxy.amqp_url()          # point the client here
        ...
        proxy.stall()                   # bytes stop flowing both ways, sockets stay open
        proxy.resume()
        await proxy.cut()               # RST every current connection (client and broker side)
        proxy.refuse_new = True         # listener closed: new connects get ECONNREFUSED
        proxy.transform_downstream = lambda b: b.replace(b"\\xce", b"\\x00")
        await proxy.inject(b"\\x08garbage")  # raw bytes to the client

Everything runs in the context's own nursery; leaving the ``async with`` closes all sockets.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from ._util import CONNECTION_ERRORS, open_service_nursery, set_reset_on_close

Transform = Callable[[bytes], bytes]
ClientWrapper = Callable[[trio.SocketStream], Awaitable[trio.abc.Stream]]

CHUNK = 65536


class _Connection:
    """One client connection and its upstream twin."""

    def __init__(self, client_raw: trio.SocketStream) -> None:
        self.client_raw = client_raw
        self.client: trio.abc.Stream = client_raw  # replaced by e.g. an SSLStream
        self.upstream: trio.SocketStream | None = None
        self.ready = False  # both sides connected (and TLS handshake done), pumps running
        self.cancel_scope = trio.CancelScope()
        self.send_locks = {"down": trio.Lock(), "up": trio.Lock()}
        self.done = trio.Event()

    def kill(self, reset: bool) -> None:
        """Close both raw sockets right now (synchronously), then stop the pumps."""
        for stream in (self.client_raw, self.upstream):
            if stream is None:
                continue
            if reset:
                set_reset_on_close(stream.socket)
            stream.socket.close()
        self.cancel_scope.cancel()


def _bind_listener(host: str, port: int) -> trio.SocketListener:
    # Plain stdlib bind so it can be done synchronously from the ``refuse_new`` setter.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


class TCPProxy:
    """Forwards 127.0.0.1:``port`` to the target; see module docstring.

    Counters: ``accepted`` (connections accepted and forwarded, ever) and ``active``
    (currently open). Connections attempted while ``refuse_new`` is set are not accepted at
    all (the listening socket is closed), so the client gets a real ECONNREFUSED.
    """

    scheme = "amqp"

    def __init__(
        self,
        target_host: str,
        target_port: int,
        nursery: trio.Nursery,
        *,
        host: str = "127.0.0.1",
        wrap_client: ClientWrapper | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._nursery = nursery
        self._wrap_client = wrap_client
        self._listener: trio.SocketListener | None = _bind_listener(host, 0)
        self.port: int = self._listener.socket.getsockname()[1]
        self._listening = trio.Event()
        self._listening.set()
        self._flowing = trio.Event()
        self._flowing.set()
        self._accepted_changed = trio.Event()
        self._connections: set[_Connection] = set()
        self.accepted = 0
        self.transform_downstream: Transform | None = None
        """Applied to each broker->client chunk (arbitrary boundaries); return b"" to drop."""
        self.transform_upstream: Transform | None = None
        """Applied to each client->broker chunk (arbitrary boundaries); return b"" to drop."""

    def amqp_url(self, user: str = "guest", password: str = "guest", vhost: str = "%2F") -> str:
        """URL that points a client at the proxy instead of the broker."""
        return f"{self.scheme}://{user}:{password}@{self.host}:{self.port}/{vhost}"

    @property
    def active(self) -> int:
        return len(self._connections)

    # -- flow control ---------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open and data is held.

        Each direction keeps at most the one chunk it already read and stops reading, so TCP
        backpressure holds the rest in kernel buffers. New connections are still accepted
        (and stall too): this simulates a black-holed network path / frozen broker.
        """
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def resume(self) -> None:
        """Undo :meth:`stall`; held data is delivered in order."""
        self._flowing.set()

    @property
    def refuse_new(self) -> bool:
        return self._listener is None

    @refuse_new.setter
    def refuse_new(self, value: bool) -> None:
        """True closes the listening socket (ECONNREFUSED); False re-binds the same port."""
        if value and self._listener is not None:
            self._listener.socket.close()  # wakes the accept loop with ClosedResourceError
            self._listener = None
            self._listening = trio.Event()
        elif not value and self._listener is None:
            self._listener = _bind_listener(self.host, self.port)
            self._listening.set()

    # -- faults ---------------------------------------------------------------------------

    def cut_nowait(self, *, reset: bool = True) -> int:
        """Abruptly close every current connection, both client and broker side.

        ``reset=True`` sends TCP RST (the client sees ECONNRESET); ``False`` a plain FIN (the
        client sees EOF). The sockets are closed before this returns. Returns how many were
        cut. New connections are still accepted unless ``refuse_new`` is set.
        """
        conns = list(self._connections)
        for conn in conns:
            conn.kill(reset)
        return len(conns)

    async def cut(self, *, reset: bool = True) -> int:
        """:meth:`cut_nowait`, then wait until the proxy has finished cleaning them up."""
        conns = list(self._connections)
        self.cut_nowait(reset=reset)
        for conn in conns:
            await conn.done.wait()
        return len(conns)

    async def inject(self, data: bytes, *, upstream: bool = False) -> int:
        """Send raw bytes to the client side of every ready connection (or to the broker side
        with ``upstream=True``), between forwarded chunks, ignoring :meth:`stall`.

        Returns how many connections received it.
        """
        count = 0
        for conn in list(self._connections):
            if not conn.ready or conn.upstream is None:
                continue
            target = conn.upstream if upstream else conn.client
            try:
                async with conn.send_locks["up" if upstream else "down"]:
                    await target.send_all(data)
            except CONNECTION_ERRORS:
                continue
            count += 1
        return count

    async def wait_accepted(self, count: int) -> None:
        """Wait until ``accepted >= count`` (wrap in ``trio.fail_after``)."""
        while self.accepted < count:
            await self._accepted_changed.wait()

    # -- machinery ------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            listener = self._listener
            if listener is None:
                await self._listening.wait()
                continue
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                continue  # closed by ``refuse_new``; loop and wait for re-listen
            except OSError:
                await trio.sleep(0.01)  # e.g. ECONNABORTED / EMFILE; don't spin
                continue
            conn = _Connection(stream)
            self._connections.add(conn)
            self.accepted += 1
            self._accepted_changed.set()
            self._accepted_changed = trio.Event()
            self._nursery.start_soon(self._handle, conn)

    async def _handle(self, conn: _Connection) -> None:
        try:
            with conn.cancel_scope:
                try:
                    if self._wrap_client is not None:
                        conn.client = await self._wrap_client(conn.client_raw)
                    conn.upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
                    conn.ready = True
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, conn, "up", nursery.cancel_scope)
                        nursery.start_soon(self._pump, conn, "down", nursery.cancel_scope)
                except CONNECTION_ERRORS:
                    pass
        finally:
            self._connections.discard(conn)
            conn.ready = False
            await trio.aclose_forcefully(conn.client)
            if conn.upstream is not None:
                await trio.aclose_forcefully(conn.upstream)
            conn.done.set()

    async def _pump(self, conn: _Connection, direction: str, both: trio.CancelScope) -> None:
        assert conn.upstream is not None
        src, dst = (
            (conn.client, conn.upstream) if direction == "up" else (conn.upstream, conn.client)
        )
        try:
            while True:
                data = await src.receive_some(CHUNK)
                if not data:
                    break  # EOF: AMQP has no half-close, so end the whole connection
                await self._flowing.wait()
                transform = (
                    self.transform_upstream if direction == "up" else self.transform_downstream
                )
                if transform is not None:
                    data = transform(bytes(data))
                if data:
                    async with conn.send_locks[direction]:
                        await dst.send_all(data)
        except CONNECTION_ERRORS:
            pass
        finally:
            both.cancel()

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.socket.close()


@asynccontextmanager
async def open_tcp_proxy(
    target_host: str, target_port: int, *, host: str = "127.0.0.1"
) -> AsyncIterator[TCPProxy]:
    """Start a :class:`TCPProxy` to ``target_host:target_port`` on an ephemeral port."""
    async with open_service_nursery() as nursery:
        proxy = TCPProxy(target_host, target_port, nursery, host=host)
        try:
            nursery.start_soon(proxy._serve)
            yield proxy
        finally:
            proxy._close_listener()
            proxy.cut_nowait(reset=False)
