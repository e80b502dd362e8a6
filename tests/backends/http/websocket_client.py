"""A real WebSocket client for the tests: the ``websockets`` library's sync client (its own
RFC 6455 implementation, not hypercorn's wsproto), run in a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from trioworker import App

from .conftest import MUST_HAPPEN

T = TypeVar("T")


def ws_url(app: App, path: str) -> str:
    return app.http.url.replace("http://", "ws://", 1) + path


def open_ws(url: str, **options: Any) -> ClientConnection:
    options.setdefault("open_timeout", MUST_HAPPEN)
    options.setdefault("close_timeout", MUST_HAPPEN)
    options.setdefault("ping_interval", None)  # no client pings but the tests' own
    return connect(url, **options)


def read_until_closed(ws: ClientConnection) -> tuple[list[str | bytes], int | None]:
    """Every message until the server closes, and the close code it sent."""
    received: list[str | bytes] = []
    try:
        while True:
            received.append(ws.recv(timeout=MUST_HAPPEN))
    except ConnectionClosed as closed:
        frame = closed.rcvd
        return received, frame.code if frame is not None else None


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking client function in a thread (the event loop keeps serving)."""
    return await trio.to_thread.run_sync(fn, *args)
