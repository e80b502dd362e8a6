"""Misbehaving "brokers" for connection/handshake failure tests.

Each is an async context manager yielding the port it listens on (127.0.0.1); the server runs
in the context's nursery and everything is closed on exit. They are dumb on purpose: the
point is what the client does when the peer is not a well-behaved RabbitMQ.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from ._util import (
    CONNECTION_ERRORS,
    listener_port,
    open_listener,
    open_service_nursery,
    set_reset_on_close,
)

Handler = Callable[[trio.SocketStream], Awaitable[None]]

# How long servers wait for the client's protocol header / for it to hang up.
PEER_TIMEOUT = 5.0


@asynccontextmanager
async def _serve(handler: Handler) -> AsyncIterator[int]:
    listener = await open_listener()

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await handler(stream)
        except CONNECTION_ERRORS:
            pass

    async with open_service_nursery() as nursery:
        try:
            nursery.start_soon(trio.serve_listeners, guarded, [listener])
            yield listener_port(listener)
        finally:
            # Connections close in ``guarded`` when the nursery is cancelled on exit.
            listener.socket.close()


async def _drain(stream: trio.SocketStream) -> None:
    """Read and discard until EOF."""
    while await stream.receive_some(65536):
        pass


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts and reads, but never sends a byte: the client's handshake must time out."""
    async with _serve(_drain) as port:
        yield port


@asynccontextmanager
async def garbage_server(
    payload: bytes = b"HTTP/1.1 400 Bad Request\r\n\r\n", *, wait_for_header: bool = True
) -> AsyncIterator[int]:
    """Sends ``payload`` then closes cleanly (FIN), like a non-AMQP service on the port.

    With ``wait_for_header`` (default) it first reads the client's bytes (up to 8, the AMQP
    protocol header) so that closing does not turn into an RST that could make the client see
    ECONNRESET before it reads the payload; that keeps the test deterministic.
    """

    async def handler(stream: trio.SocketStream) -> None:
        if wait_for_header:
            with trio.move_on_after(PEER_TIMEOUT):
                received = 0
                while received < 8:
                    chunk = await stream.receive_some(8 - received)
                    if not chunk:
                        return
                    received += len(chunk)
        await stream.send_all(payload)
        await stream.send_eof()
        with trio.move_on_after(PEER_TIMEOUT):  # let the client read and hang up first
            await _drain(stream)

    async with _serve(handler) as port:
        yield port


@asynccontextmanager
async def closing_server(*, reset: bool = False) -> AsyncIterator[int]:
    """Accepts and immediately closes: FIN by default, TCP RST with ``reset=True``.

    Note that with FIN the client may still see ECONNRESET instead of EOF if its protocol
    header reached us before the close (unread data turns a close into a reset); clients must
    treat both as a failed connection.
    """

    async def handler(stream: trio.SocketStream) -> None:
        if reset:
            set_reset_on_close(stream.socket)
        await stream.aclose()

    async with _serve(handler) as port:
        yield port


def free_port(host: str = "127.0.0.1") -> int:
    """A port with nothing listening on ``host`` (connects are refused).

    Bound to get an unused ephemeral number, then released; the kernel hands ephemeral ports
    out round-robin, so reuse within a test is unlikely.
    """
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port
