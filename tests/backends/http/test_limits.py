"""The server's limits over real sockets: slow clients are cut off, connections are capped.

A probe held 50 connections open past 20 s by sending one body byte per second, and 1,000
more with file descriptors growing one for one. Timeouts here are short (1 s) and the
bounds generous (cut off within 3x the timeout); nothing asserts how fast a thing happens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trioworker import App, Request, open_app

from .conftest import MUST_HAPPEN, client_for

MakeApp = Callable[..., App]

TIMEOUT = 1.0
CUT_OFF_WITHIN = 3 * TIMEOUT

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir() or not Path("/proc/net/tcp").exists(),
    reason="counts sockets through /proc (Linux)",
)


def upload_app(make_app: MakeApp) -> App:
    app = make_app()

    @app.http.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


async def trickle(port: int, head: bytes, interval: float = 0.2) -> tuple[bytes, float, int]:
    """Send ``head`` at once, then one byte every ``interval`` s until the server hangs up.

    Returns what the server answered, the seconds until the connection ended, and how
    many bytes were trickled.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    answer = bytearray()
    sent = 0

    async def send_slowly() -> None:
        nonlocal sent
        try:
            while True:
                await stream.send_all(b"x")
                sent += 1
                await trio.sleep(interval)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with stream:
        started = trio.current_time()
        await stream.send_all(head)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly)
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                answer += chunk
            nursery.cancel_scope.cancel()
        return bytes(answer), trio.current_time() - started, sent


async def test_a_slow_body_is_cut_off_while_a_normal_client_is_served(
    make_app: MakeApp,
) -> None:
    app = upload_app(make_app)
    app.http.body_timeout = TIMEOUT
    head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
    slow: dict[str, object] = {}
    normal_while_slow_open: list[bool] = []

    async def slow_client() -> None:
        slow["answer"], slow["seconds"], slow["sent"] = await trickle(app.http.port, head)

    async with open_app(app), client_for(app) as client:
        with trio.fail_after(MUST_HAPPEN):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_client)
                await trio.sleep(0.3)  # the slow one is trickling by now
                response = await client.post("/upload", content=b"hello")
                normal_while_slow_open.append("seconds" not in slow)
                assert response.status_code == 200 and response.json() == {"size": 5}
    assert normal_while_slow_open == [True]
    assert slow["seconds"] < CUT_OFF_WITHIN  # type: ignore[operator]
    assert 0 < slow["sent"] < 1000  # type: ignore[operator]
    answer = slow["answer"]
    assert isinstance(answer, bytes)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert answer.endswith(b'{"error":"request body not received within 1 s"}')


async def test_slow_headers_are_cut_off_by_the_keep_alive_timeout(make_app: MakeApp) -> None:
    """Until a request's headers are complete, hypercorn's idle timer runs."""
    app = upload_app(make_app)
    app.http.keep_alive_timeout = TIMEOUT
    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            answer, seconds, sent = await trickle(app.http.port, b"POST /upload HTTP/1.1\r\nX-")
    assert seconds < CUT_OFF_WITHIN
    assert sent > 0 and answer == b""


async def test_headers_over_max_header_size_get_431(make_app: MakeApp) -> None:
    app = upload_app(make_app)
    app.http.max_header_size = 1024
    async with open_app(app), client_for(app) as client:
        big = await client.post("/upload", content=b"x", headers={"X-Big": "a" * 2000})
        small = await client.post("/upload", content=b"x", headers={"X-Small": "a" * 100})
    assert big.status_code == 431
    assert small.status_code == 200


async def until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await trio.sleep(0.05)


def accepted_sockets(port: int) -> int:
    """Sockets this process holds whose local port is ``port``, the listener excepted:
    the server's accepted connections (the clients' sockets have it as remote port)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            listening = fields[3] == "0A"
            if local_port == port and not listening and fields[9] in inodes:
                count += 1
    return count


@needs_proc
async def test_connections_over_the_limit_wait_without_a_descriptor(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.http")
    app = upload_app(make_app)
    app.http.max_connections = 3
    app.http.keep_alive_timeout = 60.0  # idle connections hold their slot during the test
    idle: list[trio.SocketStream] = []
    async with open_app(app), client_for(app) as client:
        port = app.http.port
        with trio.fail_after(MUST_HAPPEN):
            for _ in range(20):
                idle.append(await trio.open_tcp_stream("127.0.0.1", port))
            await until(lambda: accepted_sockets(port) >= 3)
        served: list[int] = []

        async def request() -> None:
            response = await client.post("/upload", content=b"hello")
            served.append(response.status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(request)
            for _ in range(10):  # the server stays at the limit, accepting no more
                await trio.sleep(0.1)
                assert accepted_sockets(port) == 3  # descriptors, not 20
                assert app.http.connections == 3
            assert served == []  # waiting in the listen queue, not refused
            for stream in idle:
                await stream.aclose()
        assert served == [200]
        with trio.fail_after(MUST_HAPPEN):
            await until(lambda: app.http.connections <= 1)  # the client's keep-alive one
    limit_logs = [r for r in caplog.records if "connection limit" in r.getMessage()]
    assert len(limit_logs) == 1  # rate-limited, not one line per waiting connection


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_connections", 0),
        ("max_connections", 1.5),
        ("max_connections", True),
        ("body_timeout", 0),
        ("body_timeout", -1),
        ("body_timeout", "30"),
        ("keep_alive_timeout", None),
        ("read_timeout", 0),
        ("max_header_size", 0),
        ("backlog", -5),
    ],
)
def test_bad_settings_fail_where_they_are_set(make_app: MakeApp, name: str, value: object) -> None:
    app = make_app()
    with pytest.raises(ValueError, match=f"app.http.{name} must be"):
        setattr(app.http, name, value)


def test_defaults(make_app: MakeApp) -> None:
    http = make_app().http
    assert (http.max_connections, http.body_timeout, http.keep_alive_timeout) == (1000, 30, 5)
    assert (http.read_timeout, http.max_header_size, http.backlog) == (None, 16384, 100)
    http.body_timeout = None
    http.read_timeout = 120
    assert (http.body_timeout, http.read_timeout) == (None, 120.0)
