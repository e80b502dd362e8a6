"""Small shared pieces for the support helpers."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

# Errors that simply mean "this TCP connection is gone"; helpers swallow them per connection.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for background servers that is cancelled when the ``async with`` body ends.

    With strict exception groups, an exception raised in the body would come out wrapped in an
    ``ExceptionGroup``; that makes ``pytest.raises(SomeError)`` around a helper context fail for
    the wrong reason. When the group holds exactly one exception we re-raise it bare.
    """
    single: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    if single is not None:
        # Raised outside the ``except`` block so the group does not become its __context__.
        try:
            raise single
        finally:
            single = None


def set_reset_on_close(sock: trio.socket.SocketType) -> None:
    """Make the next ``close()`` send a TCP RST instead of a FIN (SO_LINGER with timeout 0)."""
    with contextlib.suppress(OSError):  # already closed: nothing to reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def open_listener(host: str = "127.0.0.1") -> trio.SocketListener:
    """A TCP listener on an ephemeral port of ``host``."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    if len(listeners) != 1:  # pragma: no cover - a literal IP yields exactly one
        for extra in listeners:
            await extra.aclose()
        raise RuntimeError(f"expected one listener for {host!r}, got {len(listeners)}")
    return listeners[0]


def listener_port(listener: trio.SocketListener) -> int:
    port: int = listener.socket.getsockname()[1]
    return port
