"""A compression bomb over permessage-deflate costs the server the message limit, not what
the bomb inflates to (``backends/http/_deflate.py``)."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request
from wsproto.extensions import PerMessageDeflate

from trioworker import App, WebSocket, WebSocketDisconnect, open_app
from trioworker.backends.http._deflate import BoundedPerMessageDeflate, inflating_at_most

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


def test_the_bounded_extension_stops_inflating_one_byte_past_the_limit() -> None:
    """It hands on limit + 1 bytes of a 4 MiB bomb and drops the rest: the server's size
    check (hypercorn's, in the app) then sees an oversized message and closes with 1009."""
    client, server = _pair(1000)
    inflated, code = _receive(server, client.send(BytesMessage(data=b"\0" * 4 * 2**20)))
    assert code is None  # the extension itself closes nothing
    assert len(inflated) == 1001


def test_compressed_messages_within_the_limit_arrive_whole_one_after_another() -> None:
    client, server = _pair(1000)
    for n in (1000, 999, 1000):  # the count starts again with every message
        assert _receive(server, client.send(BytesMessage(data=b"a" * n))) == (b"a" * n, None)


async def _bomb_client(port: int) -> tuple[bytes, int | None, int]:
    """wsproto as the client over a plain socket: "fits", then the bomb. Returns the echo,
    the server's close code and the peak of Python memory while the server handled the
    bomb (the bomb's frames are built before measuring: the client's own 64 MiB of zeros
    must not count)."""
    client = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    echoed = b""

    async def events() -> AsyncIterator[Any]:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            client.receive_data(data)
            for event in client.events():
                yield event

    async with stream:
        offer = Request(host="127.0.0.1", target="/ws", extensions=[PerMessageDeflate()])
        await stream.send_all(client.send(offer))
        with trio.fail_after(30):
            async for event in events():
                if isinstance(event, AcceptConnection):
                    await stream.send_all(client.send(BytesMessage(data=b"fits")))
                elif isinstance(event, BytesMessage):
                    echoed += event.data
                    if event.message_finished:
                        break
            bomb = client.send(BytesMessage(data=b"\0" * BOMB))  # about 64 KiB
            tracemalloc.start()
            try:
                await stream.send_all(bomb)
                async for event in events():
                    if isinstance(event, CloseConnection):
                        return echoed, event.code, tracemalloc.get_traced_memory()[1]
                return echoed, None, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    raise AssertionError("the server closed before the bomb")  # pragma: no cover


async def test_a_compression_bomb_closes_with_1009_without_being_inflated(
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

    async with open_app(app):
        echoed, code, peak = await _bomb_client(app.http.port)
    # wsproto's own extension inflates each 64 KiB read of the bomb in one go (~64 MiB
    # here); bounded, the server holds at most the limit (plus the compressed reads).
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    # The server closes with 1009 as for an uncompressed message over the limit.
    assert (echoed, code) == (b"fits", 1009)
    assert len(ended) == 1
