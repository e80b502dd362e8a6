"""A compression bomb over permessage-deflate costs the server the message limit, not what
the bomb inflates to (``backends/http/_deflate.py``)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from trioworker import App, WebSocket, WebSocketDisconnect, open_app
from trioworker.backends.http._deflate import BoundedPerMessageDeflate, inflating_at_most

from .websocket_client import in_thread, open_ws, read_until_closed, ws_url

MakeApp = Callable[..., App]

BOMB = 64 * 1024 * 1024  # zeros: compresses to about 64 KiB


def _pair(limit: int) -> tuple[WSConnection, WSConnection]:
    """A wsproto client and a server whose permessage-deflate is the bounded one."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(
        client.send(Request(host="x", target="/", extensions=[PerMessageDeflate()]))
    )
    list(server.events())
    with inflating_at_most(limit):
        extension = BoundedPerMessageDeflate()
    client.receive_data(server.send(AcceptConnection(extensions=[extension])))
    list(client.events())
    return client, server


def _receive(server: WSConnection, data: bytes) -> tuple[bytes, int | None]:
    """Feed ``data`` in 64 KiB reads; what the server inflated, and its close code."""
    inflated = b""
    for i in range(0, len(data), 65536):
        server.receive_data(data[i : i + 65536])
        for event in server.events():
            if isinstance(event, BytesMessage):
                inflated += event.data
            elif isinstance(event, CloseConnection):
                return inflated, event.code
    return inflated, None


def test_the_bounded_extension_stops_inflating_at_the_limit() -> None:
    client, server = _pair(1000)
    inflated, code = _receive(server, client.send(BytesMessage(data=b"\0" * 4 * 2**20)))
    assert code == CloseReason.MESSAGE_TOO_BIG
    assert len(inflated) <= 1001


def test_compressed_messages_within_the_limit_arrive_whole_one_after_another() -> None:
    client, server = _pair(1000)
    for n in (1000, 999, 1000):  # the count starts again with every message
        assert _receive(server, client.send(BytesMessage(data=b"a" * n))) == (b"a" * n, None)


async def test_a_compression_bomb_fails_its_connection_without_being_inflated(
    make_app: MakeApp,
) -> None:
    app = make_app()
    ended: list[int | None] = []

    @app.http.websocket("/ws", max_message_size=1024 * 1024)
    async def echo(socket: WebSocket) -> None:
        try:
            while True:
                await socket.send(await socket.receive())
        except WebSocketDisconnect as exc:
            ended.append(exc.code)

    bomb = b"\0" * BOMB  # the client's own memory, made before measuring

    def client(url: str) -> tuple[bytes, int | None]:
        with open_ws(url, max_size=None, compression="deflate") as ws:
            ws.send(b"fits")
            echoed = ws.recv(timeout=30)
            ws.send(bomb)
            return echoed, read_until_closed(ws)[1]

    async with open_app(app):
        tracemalloc.start()
        try:
            result = await in_thread(client, ws_url(app, "/ws"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # wsproto's own extension inflates each 64 KiB read of the bomb in one go (~64 MiB
    # here); bounded, the server holds at most the limit (plus the compressed reads).
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    # wsproto fails the connection on an extension's error (RFC 6455 7.1.7): the socket is
    # closed without a close frame, and the handler learns it as a disconnect.
    assert result == (b"fits", None)
    assert ended == [1006]
