"""App shutdown with WebSockets open: every handler is told (``receive()`` raises 1001),
has the grace period to finish, and every socket is closed with 1001."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
import trio

from trioworker import App, WebSocket, open_app
from trioworker.backends.http import _server

from .conftest import MUST_HAPPEN
from .websocket_client import in_thread, open_ws, read_until_closed, ws_url

MakeApp = Callable[..., App]
GRACE = 1.0


async def test_shutdown_closes_every_socket_with_1001_after_the_grace_period(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.http")
    app = make_app(grace_period=GRACE)
    times: dict[str, float] = {}

    @app.http.websocket("/polite")
    async def polite(socket: WebSocket) -> None:
        async for data in socket:  # ends when the server starts its stop
            await socket.send(data)
        times["polite told"] = trio.current_time()
        await trio.sleep(GRACE / 4)  # finishing work, within the grace period
        await socket.send("goodbye")

    @app.http.websocket("/stubborn")
    async def stubborn(socket: WebSocket) -> None:
        await socket.send(await socket.receive())
        try:
            await trio.sleep_forever()  # ignores the stop: cancelled when its grace ends
        finally:
            times["stubborn cancelled"] = trio.current_time()

    ready = [threading.Event(), threading.Event()]
    results: dict[str, tuple[list[str | bytes], int | None]] = {}

    def client(path: str, flag: threading.Event) -> None:
        with open_ws(ws_url(app, path)) as ws:
            ws.send("hi")
            first = ws.recv(timeout=MUST_HAPPEN)
            flag.set()
            rest, code = read_until_closed(ws)
            results[path] = ([first, *rest], code)

    async with trio.open_nursery() as clients:
        async with open_app(app):
            clients.start_soon(in_thread, client, "/polite", ready[0])
            clients.start_soon(in_thread, client, "/stubborn", ready[1])
            await in_thread(lambda: all(flag.wait(MUST_HAPPEN) for flag in ready))
            assert app.http.websockets.open == 2
            stop_at = trio.current_time()
        # leaving open_app shut the app down, and it returned: every handler is done
        assert app.http.websockets.open == 0
    assert results["/polite"] == (["hi", "goodbye"], 1001)
    assert results["/stubborn"] == (["hi"], 1001)
    assert times["polite told"] - stop_at < GRACE  # told at once, not at the deadline
    assert times["stubborn cancelled"] - stop_at >= GRACE  # it had its whole grace period
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "stubborn" in warnings[0] and "grace period" in warnings[0]


async def test_a_client_that_stops_reading_does_not_hold_the_stop(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hypercorn writes under a shield: a send to a client whose receive window is full
    ignores the grace period's cancellation. The server closes such sockets under their
    tasks shortly after the grace period, so the app's stop ends anyway."""
    monkeypatch.setattr(_server, "STUCK_AFTER", 0.5)
    caplog.set_level(logging.WARNING, logger="trioworker.http")
    app = make_app(grace_period=0.5)
    flooding = trio.Event()

    @app.http.websocket("/flood")
    async def flood(socket: WebSocket) -> None:
        while True:
            await socket.send(b"x" * 65536)
            flooding.set()

    stopped = threading.Event()
    gave_up: list[bool] = []

    def client(url: str) -> None:
        # max_queue=1: the client takes one message and stops reading from the socket.
        with open_ws(url, max_queue=1, compression=None, close_timeout=0.1):
            gave_up.append(not stopped.wait(2 * MUST_HAPPEN))  # until the app has stopped

    async with trio.open_nursery() as clients:
        async with open_app(app):
            clients.start_soon(in_thread, client, ws_url(app, "/flood"))
            with trio.fail_after(MUST_HAPPEN):
                await flooding.wait()
        stopped.set()  # the app has stopped
    assert gave_up == [False]  # its stop did not wait for the client to leave
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("still open" in w and "closed" in w for w in warnings)
