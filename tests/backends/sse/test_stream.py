"""SSE streams against a real server: batching, request headers, reconnects with
Last-Event-ID (no duplicates), the server's retry, backoff on errors, bad streams, 204."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import pytest
import trio

from trioworker import App, Event, open_app

from ._server import Reply, SSEServer
from .conftest import MUST_HAPPEN, Bulks


async def test_bulks_by_size_and_the_request_headers(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish(*[f"e{i}" for i in range(1, 11)])
    app = make_app()

    @app.sse.consume(
        sse_server.url, bulk_size=5, flush_interval=60, headers={"Authorization": "Bearer t"}
    )
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await bulks.wait_for(10)  # the flush interval is 60 s: only full bulks come out
    assert [[e.id for e in bulk] for bulk in bulks.bulks] == [
        ["1", "2", "3", "4", "5"],
        ["6", "7", "8", "9", "10"],
    ]
    assert bulks.data == [f"e{i}" for i in range(1, 11)]
    assert all(e.name == "message" for e in bulks.events)
    headers = sse_server.requests[0].headers
    assert headers["accept"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["authorization"] == "Bearer t"
    assert "last-event-id" not in headers


async def test_bulks_by_time(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    app = make_app()

    @app.sse.consume(sse_server.url, bulk_size=100, flush_interval=0.5)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await sse_server.wait_requests(1)
        await trio.sleep(0.2)  # the stream is open
        sent_at = trio.current_time()
        sse_server.publish("a", "b", "c")
        await bulks.wait_for(3)
    assert bulks.ids == ["1", "2", "3"]
    assert len(bulks.bulks) == 1
    assert 0.45 <= bulks.times[0] - sent_at <= 5.0


async def test_reconnects_resume_from_last_event_id_without_duplicates(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.drop_after = 4  # every connection drops half-way through its 5th event
    sse_server.publish(*[f"e{i}" for i in range(1, 26)])
    app = make_app()

    @app.sse.consume(sse_server.url, bulk_size=3, flush_interval=0.1)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await bulks.wait_for(25)
        await trio.sleep(0.3)  # a duplicate would arrive now
    assert bulks.ids == [str(i) for i in range(1, 26)]
    assert bulks.data == [f"e{i}" for i in range(1, 26)]
    sent = [r.headers.get("last-event-id") for r in sse_server.requests]
    # The half-sent 5th event's id was never dispatched, so it is not claimed as seen.
    assert sent[:7] == [None, "4", "8", "12", "16", "20", "24"]


async def test_the_server_retry_sets_the_reconnect_delay(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.log.extend(["a", "b"])
    sse_server.replies.append(Reply(body=b"retry: 700\nid: 1\ndata: a\n\n", then="end"))
    app = make_app()

    @app.sse.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await bulks.wait_for(2)
    first, second = sse_server.requests[:2]
    # Without the retry, a stream that worked reconnects after 0.05-0.1 s.
    assert 0.65 <= second.time - first.time <= 5.0
    assert second.headers["last-event-id"] == "1"
    assert bulks.data == ["a", "b"]
    assert bulks.events[0].retry == 700
    assert bulks.events[1].retry is None


async def test_backoff_on_server_errors_then_recovery(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish("finally")
    for _ in range(5):
        sse_server.replies.append(Reply(status=500, content_type="text/plain", body=b"oops"))
    app = make_app()

    @app.sse.consume(sse_server.url, name="flaky")
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await sse_server.wait_requests(3)
        health = app.health()["sse"]
        assert not health.ok
        assert "'flaky' is reconnecting" in health.detail
        assert "HTTP 500" in health.detail
        await bulks.wait_for(1)
        assert app.health()["sse"].ok
    times = [r.time for r in sse_server.requests[:6]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # base 0.1 s doubling, jitter x0.5-1: two steps later is always longer.
    for earlier, later in zip(gaps, gaps[2:], strict=False):
        assert later > earlier, gaps
    assert sum(gaps) >= 0.05 + 0.1 + 0.2 + 0.4 + 0.8
    assert bulks.data == ["finally"]


async def test_wrong_content_type_is_an_error_then_recovery(
    sse_server: SSEServer,
    make_app: Callable[..., App],
    bulks: Bulks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sse_server.publish("ok")
    sse_server.replies.append(Reply(content_type="text/html", body=b"data: no\n\n", then="hang"))
    app = make_app()

    @app.sse.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    with caplog.at_level(logging.ERROR, logger="trioworker.sse"):
        async with open_app(app):
            await bulks.wait_for(1)
    assert bulks.data == ["ok"]  # nothing from the text/html body
    assert "content type 'text/html', not text/event-stream" in caplog.text
    assert sse_server.disconnects >= 1  # the client hung up on the bad response


async def test_garbage_is_an_error_then_reconnect_and_the_app_keeps_going(
    sse_server: SSEServer,
    make_app: Callable[..., App],
    bulks: Bulks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sse_server.log.extend(["a", "b", "c", "d"])
    sse_server.replies.extend(
        [
            # Invalid UTF-8 after a good event; the server keeps the connection open.
            Reply(body=b"id: 1\ndata: a\n\ndata: \xff\xfe\n\n", then="hang"),
            # A line that never ends.
            Reply(body=b"id: 2\ndata: b\n\ndata: " + b"x" * 5000, then="hang"),
            # Random binary.
            Reply(body=bytes(range(256)) * 4, then="hang"),
        ]
    )
    app = make_app()

    @app.sse.consume(sse_server.url, max_line_length=1000)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    with caplog.at_level(logging.INFO, logger="trioworker.sse"):
        async with open_app(app):
            await bulks.wait_for(4)
            assert sse_server.disconnects >= 3  # each bad connection was closed by us
            sse_server.publish("live")  # still reading
            await bulks.wait_for(5)
            assert app.health()["sse"].ok
    assert bulks.data == ["a", "b", "c", "d", "live"]
    assert bulks.ids == ["1", "2", "3", "4", "5"]
    sent = [r.headers.get("last-event-id") for r in sse_server.requests[:4]]
    assert sent == [None, "1", "2", "2"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("not valid UTF-8" in m for m in errors), errors
    assert any("line longer than 1000 bytes" in m for m in errors), errors
    assert len(errors) == 3, errors


async def test_204_stops_the_stream_for_good(
    sse_server: SSEServer, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    sse_server.replies.append(Reply(status=204, content_type=""))
    app = make_app()

    @app.sse.consume(sse_server.url, name="done")
    async def handle(events: list[Event]) -> None:
        raise AssertionError("no event was sent")

    with caplog.at_level(logging.WARNING, logger="trioworker.sse"):
        async with open_app(app):
            await sse_server.wait_requests(1)
            await trio.sleep(1.0)  # a reconnect would happen in well under a second
            assert len(sse_server.requests) == 1
            health = app.health()["sse"]
            assert health.ok
            assert "'done' was ended by the server (204)" in health.detail
    assert "204 No Content" in caplog.text


async def test_connection_refused_backs_off_and_health_says_so(
    make_app: Callable[..., App],
) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app()

    @app.sse.consume(f"http://user:secret@127.0.0.1:{port}/x?token=secret")
    async def handle(events: list[Event]) -> None:
        raise AssertionError("nothing to read")

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            # Polling: there is no server to tell us about the attempts.
            while app.sse.runs[0].stats.reconnects < 3:  # noqa: ASYNC110
                await trio.sleep(0.05)
        health = app.health()["sse"]
    assert not health.ok
    assert f"'http://127.0.0.1:{port}/x' is reconnecting: cannot read the stream" in health.detail
    assert "secret" not in health.detail
