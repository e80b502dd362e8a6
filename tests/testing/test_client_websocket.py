"""``client.websocket(path)``: the app's WebSocket routes in-process, with hypercorn's rules."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioworker import App, WebSocket
from trioworker.http import WebSocketDisconnect
from trioworker.testing import TestClient, WebSocketRejected
from trioworker.testing._websocket import QUEUED


def make_app(**options: Any) -> App:
    options.setdefault("name", "ws-under-test")
    options.setdefault("grace_period", 2.0)
    return App(**options)


async def test_messages_both_ways_path_parameters_and_the_close_code() -> None:
    app = make_app()
    ended: list[int | None] = []

    @app.http.websocket("/rooms/{room:int}")
    async def room(ws: WebSocket) -> None:
        await ws.accept(subprotocol="chat.v2" if "chat.v2" in ws.subprotocols else None)
        async for data in ws:
            await ws.send(data.upper() if isinstance(data, str) else data[::-1])
            await ws.send(f"room {ws.path_params['room']} x={ws.query.get('x')}")
        ended.append(ws.close_code)

    async with TestClient(app) as client:
        async with client.websocket("/rooms/7?x=1", subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            await ws.send("hello")
            assert await ws.receive() == "HELLO"
            assert await ws.receive_text() == "room 7 x=1"
            await ws.send(b"\x01\x02")
            assert await ws.receive_bytes() == b"\x02\x01"
            await ws.receive_text()
            await ws.close(4001, "done")
        async with client.websocket("/rooms/8") as ws:  # left without a close: 1000
            assert ws.subprotocol is None
            await ws.send_json({"a": 1})
            assert await ws.receive() == '{"A": 1}'
            await ws.receive()
    assert ended == [4001, 1000]


async def test_the_app_closing_ends_the_client_s_receive() -> None:
    app = make_app()

    @app.http.websocket("/once")
    async def once(ws: WebSocket) -> None:
        assert await ws.receive() == '"x"'
        await ws.send('{"bye": true}')
        await ws.close(4002, "that is all")

    async with TestClient(app) as client, client.websocket("/once") as ws:
        await ws.send('"x"')
        assert await ws.receive_json() == {"bye": True}
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive()
        assert (closed.value.code, closed.value.reason) == (4002, "that is all")
        assert (ws.close_code, ws.close_reason) == (4002, "that is all")
        with pytest.raises(WebSocketDisconnect):
            await ws.send("too late")


async def test_refused_handshakes_raise_with_the_http_status() -> None:
    app = make_app()

    @app.http.websocket("/private")
    async def private(ws: WebSocket) -> None:
        await ws.close(1008)  # before accepting: the handshake is refused

    async with TestClient(app) as client:
        with pytest.raises(WebSocketRejected) as unknown:
            async with client.websocket("/nowhere"):
                pytest.fail("connected to a path no route serves")
        assert unknown.value.status_code == 404
        assert unknown.value.json() == {"error": "not found"}
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/private"):
                pytest.fail("connected although the handler refused")
        assert refused.value.status_code == 403


async def test_a_failing_handler_closes_with_1011_and_the_test_s_errors_are_its_own() -> None:
    app = make_app()

    @app.http.websocket("/fails")
    async def fails(ws: WebSocket) -> None:
        await ws.receive()
        raise KeyError("boom")

    async with TestClient(app) as client:
        async with client.websocket("/fails") as ws:
            await ws.send("go")
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
            assert closed.value.code == 1011
        with pytest.raises(AssertionError, match="the test's own"):  # not an ExceptionGroup
            async with client.websocket("/fails"):
                raise AssertionError("the test's own")


async def test_an_oversized_message_closes_with_1009() -> None:
    app = make_app()

    @app.http.websocket("/small", max_message_size=10)
    async def small(ws: WebSocket) -> None:
        async for _ in ws:
            pass

    async with TestClient(app) as client, client.websocket("/small") as ws:
        await ws.send("x" * 11)
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive()
        assert closed.value.code == 1009


async def test_a_handler_that_does_not_read_slows_the_sender_down() -> None:
    app = make_app()
    release = trio.Event()
    received: list[str | bytes] = []

    @app.http.websocket("/slow")
    async def slow(ws: WebSocket) -> None:
        await ws.accept()
        await release.wait()
        async for data in ws:
            received.append(data)

    async with TestClient(app) as client, client.websocket("/slow") as ws:
        sent = 0
        with trio.move_on_after(0.2):
            for i in range(10 * QUEUED):
                await ws.send(str(i))
                sent += 1
        assert sent == QUEUED  # then send() waited for the handler
        release.set()
        await ws.send("last")
        with trio.fail_after(5):
            while len(received) < sent + 1:  # noqa: ASYNC110 - polling the handler's list
                await trio.sleep(0.01)
    assert received == [*map(str, range(sent)), "last"]


async def test_a_handler_that_never_ends_is_cancelled_after_drain_timeout() -> None:
    app = make_app()
    cancelled: list[bool] = []

    @app.http.websocket("/stuck")
    async def stuck(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await trio.sleep_forever()  # never reads: never sees the close
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async with TestClient(app, drain_timeout=0.2) as client:
        with pytest.raises(RuntimeError, match=r"did not end within 0\.2 s"):
            async with client.websocket("/stuck"):
                pass
    assert cancelled == [True]


async def test_outside_the_client_s_block_it_says_so() -> None:
    client = TestClient(make_app())
    with pytest.raises(RuntimeError, match="inside `async with TestClient"):
        client.websocket("/x")
    with pytest.raises(ValueError, match="starts with '/'"):
        async with TestClient(make_app()) as inside:
            inside.websocket("ws://host/x")


async def test_what_the_app_sends_after_the_client_closed_is_dropped() -> None:
    app = make_app()
    done = trio.Event()

    @app.http.websocket("/chatty")
    async def chatty(ws: WebSocket) -> None:
        with pytest.raises(WebSocketDisconnect):
            await ws.receive()
        for i in range(5 * QUEUED):  # as under hypercorn: nobody listens, nothing waits
            await ws._send({"type": "websocket.send", "text": str(i)})  # past our own check
        done.set()

    async with TestClient(app) as client, client.websocket("/chatty") as ws:
        await ws.close()
        with trio.fail_after(5):
            await done.wait()
