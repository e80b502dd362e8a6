"""The SSE backend in the app: handler failures, graceful shutdown (running calls finish,
buffered events are flushed, the connection closes), the grace period, registration on a
running app, and what the backend refuses at registration."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio

from trioworker import App, Event, open_app

from ._server import SSEServer
from .conftest import MUST_HAPPEN, Bulks


async def test_a_failing_handler_is_logged_hooked_and_the_stream_goes_on(
    sse_server: SSEServer,
    make_app: Callable[..., App],
    bulks: Bulks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sse_server.publish("a", "b", "c", "d")
    failed: list[tuple[list[str], BaseException]] = []
    app = make_app()

    async def on_exception(events: list[Event], exc: BaseException) -> None:
        failed.append(([e.id for e in events], exc))

    @app.sse.consume(sse_server.url, bulk_size=2, flush_interval=0.1, on_exception=on_exception)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)
        if events[0].data == "a":
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="trioworker.sse"):
        async with open_app(app):
            await bulks.wait_for(4)
            await trio.sleep(0.3)  # a retry of the failed bulk would come now
    assert bulks.ids == ["1", "2", "3", "4"]  # handed once each: no retry
    assert len(failed) == 1
    assert failed[0][0] == ["1", "2"]
    assert isinstance(failed[0][1], RuntimeError)
    assert "handler failed on 2 events (ids '1'..'2')" in caplog.text
    assert "not retried" in caplog.text
    assert len(sse_server.requests) == 1  # a handler error does not touch the connection


async def test_a_handler_timeout_counts_as_a_failure(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish("slow", "fast")
    failed: list[BaseException] = []
    app = make_app()

    @app.sse.consume(sse_server.url, timeout=0.2, on_exception=lambda ev, exc: failed.append(exc))
    async def handle(events: list[Event]) -> None:
        if events[0].data == "slow":
            await trio.sleep(10)
        bulks.add(events)

    async with open_app(app):
        await bulks.wait_for(1)
    assert bulks.data == ["fast"]
    assert [type(e).__name__ for e in failed] == ["HandlerTimeout"]


async def test_graceful_shutdown_finishes_running_calls_and_flushes_buffered_events(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish(*[f"e{i}" for i in range(1, 6)])
    started = trio.Event()
    app = make_app(grace_period=5.0)

    @app.sse.consume(sse_server.url, bulk_size=2, flush_interval=60)
    async def handle(events: list[Event]) -> None:
        if not started.is_set():
            started.set()
            await trio.sleep(0.5)  # events 3-5 arrive and wait meanwhile
        bulks.add(events)

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await started.wait()
        await trio.sleep(0.1)
        assert app.sse.runs[0].batcher.buffered == 3
        stop_at = trio.current_time()
    stopped_after = trio.current_time() - stop_at
    # The running call finished (not cancelled), then the 3 buffered events were handed
    # over, in order and in bulks of 2 — even the last, partial one, whose flush interval
    # (60 s) had not passed.
    assert [[e.id for e in bulk] for bulk in bulks.bulks] == [["1", "2"], ["3", "4"], ["5"]]
    assert 0.2 <= stopped_after <= 5.0
    assert sse_server.disconnects == 1  # the client closed its connection
    assert sse_server.open_streams == 0


async def test_shutdown_past_the_grace_period_drops_with_a_warning(
    sse_server: SSEServer,
    make_app: Callable[..., App],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sse_server.publish("stuck", "waiting")
    started = trio.Event()
    app = make_app(grace_period=0.5)

    @app.sse.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        started.set()
        await trio.sleep_forever()

    with caplog.at_level(logging.WARNING, logger="trioworker.sse"):
        async with open_app(app):
            with trio.fail_after(MUST_HAPPEN):
                await started.wait()
            await trio.sleep(0.1)
            stop_at = trio.current_time()
        stopped_after = trio.current_time() - stop_at
    assert 0.4 <= stopped_after <= 5.0
    assert "2 events (ids '1'..'2') not handled: the grace period ran out" in caplog.text
    assert app.sse.runs == []  # the backend is fully stopped


async def test_an_sse_only_app_runs_without_a_broker(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish("a")
    app = make_app()  # its amqp_url is a port where nothing listens

    @app.sse.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await bulks.wait_for(1)
        health = app.health()
    assert set(health) == {"sse"} and health["sse"].ok
    assert not list(app.amqp.supervisors)  # it never dialled the broker


async def test_a_stream_registered_on_a_running_app_starts_at_once(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish("x")
    app = make_app()
    assert not app.sse.active
    async with open_app(app):
        assert "sse" not in app.health()

        @app.sse.consume(sse_server.url)
        async def handle(events: list[Event]) -> None:
            bulks.add(events)

        await bulks.wait_for(1)
        assert app.health()["sse"].ok
        # A second stream joins the running backend.
        more = Bulks()

        @app.sse.consume(sse_server.url, name="second")
        async def handle_more(events: list[Event]) -> None:
            more.add(events)

        await more.wait_for(1)
    assert bulks.data == more.data == ["x"]


async def test_serving_the_app_again_resumes_each_stream_where_it_stopped(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.publish("one")
    app = make_app()

    @app.sse.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with open_app(app):
        await bulks.wait_for(1)
    sse_server.publish("two")
    async with open_app(app):
        await bulks.wait_for(2)
        await trio.sleep(0.2)  # "one" again would come now
    assert bulks.data == ["one", "two"]
    assert sse_server.requests[-1].headers["last-event-id"] == "1"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://host/x", {}, "http"),
        ("http:///x", {}, "http"),
        ("http://h/x", {"bulk_size": 0}, "at least 1"),
        ("http://h/x", {"concurrency": 0}, "at least 1"),
        ("http://h/x", {"timeout": 0}, "timeout"),
        ("http://h/x", {"read_timeout": -1}, "read_timeout"),
        ("http://h/x", {"flush_interval": -1}, "flush_interval"),
        ("http://h/x", {"max_line_length": 0}, "max_line_length"),
    ],
)
def test_bad_options_fail_at_registration(
    url: str, options: dict[str, float], message: str
) -> None:
    app = App()
    with pytest.raises(ValueError, match=message):
        app.sse.consume(url, **options)  # type: ignore[arg-type]
    assert not app.sse.active


async def test_a_slow_handler_pauses_reading(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    """Backpressure: while the handler is stuck, the reader stops reading instead of
    buffering the whole stream."""
    big = "x" * 65536  # at most ~2 events per read
    sse_server.publish(*[f"{i}{big}" for i in range(50)])
    release = trio.Event()
    app = make_app()

    @app.sse.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        await release.wait()
        bulks.add(events)

    async with open_app(app):
        run = app.sse.runs[0]
        await trio.sleep(1.0)  # plenty of time to read all 3 MB without the pause
        assert run.batcher.buffered <= run.max_buffered + 2
        release.set()
        await bulks.wait_for(50)
    assert bulks.ids == [str(i) for i in range(1, 51)]
