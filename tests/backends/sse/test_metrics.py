"""SSE streams in the app's Prometheus metrics, scraped the way Prometheus reads them:
events received / handled / failed / dropped, reconnects, bulk sizes, handler durations,
the connected gauge, and counters that outlive a run of the app."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from tests.metrics._scrape import scrape, value
from trioworker import App, Event, open_app

from ._server import SSEServer
from .conftest import MUST_HAPPEN, Bulks

pytestmark = pytest.mark.broker  # the app's AMQP backend is always on

NAME = "orders-feed"


async def test_counts_handled_failed_and_reconnects(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    sse_server.drop_after = 3  # every connection drops in the middle of its 4th event
    sse_server.publish("ok1", "bad2", "ok3", "ok4", "ok5", "ok6", "ok7")
    app = make_app()

    @app.sse.consume(sse_server.url, bulk_size=2, flush_interval=0.05, name=NAME)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)
        if any(e.data.startswith("bad") for e in events):
            raise ValueError("bad event")

    async with open_app(app):
        await bulks.wait_for(7)
        stats = app.sse.runs[0].stats
        with trio.fail_after(MUST_HAPPEN):  # a call is counted once it returned, after add()
            while stats.handled < 7:  # noqa: ASYNC110
                await trio.sleep(0.01)
        running = scrape(app)

    failed_bulk = next(b for b in bulks.bulks if any(e.data == "bad2" for e in b))
    assert value(running, "trioworker_sse_events_received_total", stream=NAME) == 7
    assert value(running, "trioworker_sse_events_handled_total", stream=NAME) == 7
    assert value(running, "trioworker_sse_events_failed_total", stream=NAME) == len(failed_bulk)
    assert value(running, "trioworker_sse_events_dropped_total", stream=NAME) == 0
    # 7 events, 3 per connection: at least two drops, each followed by a reconnect.
    assert value(running, "trioworker_sse_reconnects_total", stream=NAME) >= 2
    bulk_count = value(running, "trioworker_sse_bulk_size_count", stream=NAME)
    assert bulk_count == len(bulks.bulks)
    assert value(running, "trioworker_sse_bulk_size_sum", stream=NAME) == 7
    assert (
        value(running, "trioworker_sse_handler_duration_seconds_count", stream=NAME) == bulk_count
    )
    assert value(running, "trioworker_sse_handlers_running", stream=NAME) == 0

    # After the app stopped: not connected, and the counters are still there.
    stopped = scrape(app)
    assert value(stopped, "trioworker_sse_stream_connected", stream=NAME) == 0
    assert value(stopped, "trioworker_sse_events_received_total", stream=NAME) == 7


async def test_connected_gauge_and_counters_across_two_runs_of_one_app(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    app = make_app()

    @app.sse.consume(sse_server.url, flush_interval=0.05, name=NAME)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    sse_server.publish("a", "b")
    async with open_app(app):
        await bulks.wait_for(2)
        assert value(scrape(app), "trioworker_sse_stream_connected", stream=NAME) == 1
    sse_server.publish("c")
    async with open_app(app):  # resumes after "b" (Last-Event-ID) and keeps counting
        await bulks.wait_for(3)
    assert bulks.data == ["a", "b", "c"]
    samples = scrape(app)
    assert value(samples, "trioworker_sse_events_received_total", stream=NAME) == 3
    assert value(samples, "trioworker_sse_stream_connected", stream=NAME) == 0


async def test_events_left_at_a_stop_past_the_grace_period_are_dropped(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    app = make_app(grace_period=0.2)

    @app.sse.consume(sse_server.url, flush_interval=0.05, name=NAME)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)
        await trio.sleep_forever()  # hangs: the stop cancels it after the grace period

    sse_server.publish("a", "b", "c")
    async with open_app(app):
        await bulks.wait_for(1)
        with trio.fail_after(MUST_HAPPEN):
            while app.sse.runs[0].stats.received < 3:  # noqa: ASYNC110
                await trio.sleep(0.01)
    samples = scrape(app)
    assert value(samples, "trioworker_sse_events_received_total", stream=NAME) == 3
    assert value(samples, "trioworker_sse_events_handled_total", stream=NAME) == 0
    assert value(samples, "trioworker_sse_events_dropped_total", stream=NAME) == 3


async def test_two_streams_with_one_name_are_one_series(
    sse_server: SSEServer, make_app: Callable[..., App], bulks: Bulks
) -> None:
    app = make_app()
    for _ in range(2):

        @app.sse.consume(sse_server.url, flush_interval=0.05, name=NAME)
        async def handle(events: list[Event]) -> None:
            bulks.add(events)

    sse_server.publish("x")
    async with open_app(app):
        await bulks.wait_for(2)  # each stream reads the one event
        samples = scrape(app)  # would fail on a series that appears twice
    assert value(samples, "trioworker_sse_events_received_total", stream=NAME) == 2
