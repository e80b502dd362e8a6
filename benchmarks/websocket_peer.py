"""The peer of ``websocket-echo``: a raw ASGI echo app on hypercorn, no trioworker.

Run by ``bench_websocket.py hypercorn ...`` as its own process (``python
websocket_peer.py``): it serves ``/echo`` on ``127.0.0.1`` (a free port), prints one JSON
line ``{"url": "http://127.0.0.1:PORT"}`` once it listens, and stops gracefully when its
stdin closes (the load process closes it, or dies: no orphan server either way).

Why this peer: trioworker's WebSocket routes *are* hypercorn (its trio worker, wsproto)
plus our layer — routing the handshake, the :class:`~trioworker.WebSocket` object, the
session and its close codes, the connection limit, the bounded deflate. The same hypercorn
serving the smallest correct ASGI echo app, configured as trioworker configures it (no
access log, the 1 MiB message limit), is what is left without that layer, so the ratio of
the two says what the layer costs. ``hypercorn.trio.serve`` is hypercorn's own accept loop,
which trioworker's ``_server.py`` copies (plus the connection limit).

The helpers :func:`announce` and :func:`stdin_closed` are shared with the trioworker server
of ``bench_websocket.py``, so both servers start and stop the same way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import trio

PATH = "/echo"
#: trioworker's default ``max_message_size`` (and so its hypercorn limit): the same here.
MAX_MESSAGE_SIZE = 1024 * 1024

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def announce(url: str) -> None:
    """Tell the load process where the server listens (the first line of stdout)."""
    sys.stdout.write(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()


async def stdin_closed() -> None:
    """Return once stdin reaches EOF: the load process is done (or gone)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(1024):
            pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """ASGI 3: every message on ``/echo`` goes back as it came (text as text, bytes as
    bytes); other paths are refused in the handshake; plain HTTP gets 404."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if (await receive())["type"] != "websocket.connect":
        return
    if scope["path"] != PATH:
        await send({"type": "websocket.close", "code": 1008})  # hypercorn answers 403
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def main() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.websocket_max_message_size = MAX_MESSAGE_SIZE
    config.graceful_timeout = 5.0
    async with trio.open_nursery() as nursery:
        # Plain dicts, as trioworker's ASGIApp: hypercorn's TypedDict signature is stricter.
        server = partial(serve, cast("Any", echo_app), config, shutdown_trigger=stdin_closed)
        binds: list[str] = await nursery.start(server)
        announce(binds[0])


if __name__ == "__main__":
    trio.run(main)
