"""The exposition (no broker): what ``app.metrics.render()`` says, parsed as Prometheus would.

The AMQP counters are read from plain ints at scrape time; here they are set directly on
a route's stats to check the collector's arithmetic and labels in isolation (the broker
tests in test_amqp_metrics.py check that the backend bumps them).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from trioworker import Actions, App
from trioworker.metrics._collector import HTTP_BUCKETS
from trioworker.pipeline._histogram import Histogram

from ._scrape import names, scrape, value

URL = "amqp://guest:guest@127.0.0.1:5672/"


def make_app(name: str = "metrics-unit") -> App:
    return App(URL, name=name)


def test_render_returns_the_exposition_and_its_content_type() -> None:
    body, content_type = make_app().metrics.render()
    assert content_type == CONTENT_TYPE_LATEST
    assert isinstance(body, bytes)
    assert b"# TYPE trioworker_amqp_reconnects_total counter" in body


def test_http_requests_are_counted_by_method_route_template_and_status() -> None:
    app = make_app()
    app.metrics.http_request("get", "/hello/{name}", 200, 0.003)
    app.metrics.http_request("GET", "/hello/{name}", 200, 0.2)
    app.metrics.http_request("GET", "/hello/{name}", 404, 0.001)
    app.metrics.http_request("POST", "/orders", 201, 3.0)
    s = scrape(app)

    hello = {"method": "GET", "route": "/hello/{name}", "status": "200"}
    assert value(s, "trioworker_http_requests_total", **hello) == 2
    assert value(s, "trioworker_http_requests_total", method="GET", route="/hello/{name}",
                 status="404") == 1  # fmt: skip
    assert value(s, "trioworker_http_requests_total", method="POST", route="/orders",
                 status="201") == 1  # fmt: skip

    duration = "trioworker_http_request_duration_seconds"
    assert value(s, f"{duration}_count", **hello) == 2
    assert value(s, f"{duration}_sum", **hello) == pytest.approx(0.203)
    # 0.003 s is in every bucket from le=0.005 up; 0.2 s from le=0.25 up.
    assert value(s, f"{duration}_bucket", le="0.001", **hello) == 0
    assert value(s, f"{duration}_bucket", le="0.005", **hello) == 1
    assert value(s, f"{duration}_bucket", le="0.1", **hello) == 1
    assert value(s, f"{duration}_bucket", le="0.25", **hello) == 2
    assert value(s, f"{duration}_bucket", le="+Inf", **hello) == 2
    buckets = [k for k in s if k[0] == f"{duration}_bucket" and ("status", "200") in k[1]]
    assert len(buckets) == len(HTTP_BUCKETS) + 1


def test_a_negative_duration_is_refused_and_records_nothing() -> None:
    app = make_app()
    with pytest.raises(ValueError, match="cannot take"):
        app.metrics.http_request("GET", "/", 200, -1.0)
    assert not [k for k in scrape(app) if k[0] == "trioworker_http_requests_total"]


def test_each_app_has_its_own_registry() -> None:
    first, second = make_app("first"), make_app("second")
    first.metrics.http_request("GET", "/only-first", 200, 0.01)
    assert value(scrape(first), "trioworker_http_requests_total", method="GET",
                 route="/only-first", status="200") == 1  # fmt: skip
    assert not [k for k in scrape(second) if k[0] == "trioworker_http_requests_total"]


def test_a_registered_route_exports_zeroes_before_the_app_runs() -> None:
    app = make_app()

    @app.amqp.consume(["orders", "orders.retry"], bulk_size=8, name="orders")
    async def handle(messages: list[object]) -> None:
        pass

    s = scrape(app)
    for queue in ("orders", "orders.retry"):
        labels = {"route": "orders", "queue": queue, "connection": "default"}
        for kind in ("received", "acked", "rejected", "requeued", "dropped"):
            assert value(s, f"trioworker_amqp_messages_{kind}_total", **labels) == 0
    route = {"route": "orders", "connection": "default"}
    for reason in ("size", "time"):
        assert value(s, "trioworker_amqp_bulks_flushed_total", reason=reason, **route) == 0
    for outcome in ("ok", "error", "timeout", "cancelled"):
        count = "trioworker_amqp_handler_duration_seconds_count"
        assert value(s, count, outcome=outcome, **route) == 0
    assert value(s, "trioworker_amqp_bulk_size_count", **route) == 0
    assert value(s, "trioworker_amqp_handlers_running", **route) == 0
    assert value(s, "trioworker_amqp_messages_buffered", **route) == 0
    # Not running: the connection is down and was never lost.
    assert value(s, "trioworker_amqp_connection_up", connection="default") == 0
    assert value(s, "trioworker_amqp_reconnects_total", connection="default") == 0


def test_route_counters_are_exported_per_queue_and_vhost_connection() -> None:
    app = make_app()

    @app.amqp.consume(["a", "b"], name="r", vhost="tenant-1")
    async def handle(messages: list[object]) -> None:
        pass

    route = app.amqp.routes[0]
    route.stats.queue("a").received = 7
    route.stats.queue("a").count(Actions.ACK, 4)
    route.stats.queue("a").count(Actions.REJECT, 2)
    route.stats.queue("b").count(Actions.REQUEUE, 3)
    route.stats.queue("b").dropped = 5
    stats = route.stats.batcher
    stats.flushed_by_size, stats.flushed_by_time = 11, 4
    stats.bulk_sizes.observe(3)
    stats.bulk_sizes.observe(8)
    stats.durations["error"].observe(0.5)

    s = scrape(app)
    a = {"route": "r", "queue": "a", "connection": "default/tenant-1"}
    b = {**a, "queue": "b"}
    assert value(s, "trioworker_amqp_messages_received_total", **a) == 7
    assert value(s, "trioworker_amqp_messages_acked_total", **a) == 4
    assert value(s, "trioworker_amqp_messages_rejected_total", **a) == 2
    assert value(s, "trioworker_amqp_messages_requeued_total", **a) == 0
    assert value(s, "trioworker_amqp_messages_requeued_total", **b) == 3
    assert value(s, "trioworker_amqp_messages_dropped_total", **b) == 5
    r = {"route": "r", "connection": "default/tenant-1"}
    assert value(s, "trioworker_amqp_bulks_flushed_total", reason="size", **r) == 11
    assert value(s, "trioworker_amqp_bulks_flushed_total", reason="time", **r) == 4
    assert value(s, "trioworker_amqp_bulk_size_count", **r) == 2
    assert value(s, "trioworker_amqp_bulk_size_sum", **r) == 11
    assert value(s, "trioworker_amqp_bulk_size_bucket", le="2.0", **r) == 0
    assert value(s, "trioworker_amqp_bulk_size_bucket", le="4.0", **r) == 1
    assert value(s, "trioworker_amqp_bulk_size_bucket", le="8.0", **r) == 2
    duration = "trioworker_amqp_handler_duration_seconds"
    assert value(s, f"{duration}_count", outcome="error", **r) == 1
    assert value(s, f"{duration}_sum", outcome="error", **r) == 0.5
    assert value(s, f"{duration}_count", outcome="ok", **r) == 0


def test_routes_sharing_a_name_on_one_connection_are_added_up() -> None:
    app = make_app()

    @app.amqp.consume("q", name="same")
    async def first(messages: list[object]) -> None:
        pass

    @app.amqp.consume("q", name="same")
    async def second(messages: list[object]) -> None:
        pass

    for n, route in enumerate(app.amqp.routes, start=1):
        route.stats.queue("q").received = 10 * n
        route.stats.batcher.flushed_by_time = n
        route.stats.batcher.durations["ok"].observe(n)
    s = scrape(app)  # fails on a duplicated series
    labels = {"route": "same", "queue": "q", "connection": "default"}
    assert value(s, "trioworker_amqp_messages_received_total", **labels) == 30
    r = {"route": "same", "connection": "default"}
    assert value(s, "trioworker_amqp_bulks_flushed_total", reason="time", **r) == 3
    assert value(s, "trioworker_amqp_handler_duration_seconds_sum", outcome="ok", **r) == 3


def test_every_documented_metric_is_exported() -> None:
    app = make_app()

    @app.amqp.consume("q")
    async def handle(messages: list[object]) -> None:
        pass

    app.metrics.http_request("GET", "/", 200, 0.01)
    exported = names(scrape(app))
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    for family in (
        "trioworker_amqp_messages_received_total",
        "trioworker_amqp_messages_acked_total",
        "trioworker_amqp_messages_rejected_total",
        "trioworker_amqp_messages_requeued_total",
        "trioworker_amqp_messages_dropped_total",
        "trioworker_amqp_bulk_size_bucket",
        "trioworker_amqp_bulks_flushed_total",
        "trioworker_amqp_handler_duration_seconds_bucket",
        "trioworker_amqp_handlers_running",
        "trioworker_amqp_messages_buffered",
        "trioworker_amqp_reconnects_total",
        "trioworker_amqp_connection_up",
        "trioworker_http_requests_total",
        "trioworker_http_request_duration_seconds_bucket",
    ):
        assert family in exported
        documented = family.removesuffix("_bucket")
        assert f"`{documented}`" in text, f"{documented} is not documented in docs/metrics.md"


# ------------------------------------------------------------------ Histogram


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    h = Histogram([1, 5, 10])
    for v in (0.5, 1, 1.0001, 5, 11, 1000):
        h.observe(v)
    assert h.cumulative() == [("1.0", 2), ("5.0", 4), ("10.0", 4), ("+Inf", 6)]
    assert h.count == 6
    assert h.sum == pytest.approx(0.5 + 1 + 1.0001 + 5 + 11 + 1000)


def test_histograms_merge_only_with_the_same_buckets() -> None:
    a, b = Histogram([1, 2]), Histogram([1, 2])
    a.observe(1)
    b.observe(2)
    b.observe(3)
    a.merge(b)
    assert a.cumulative() == [("1.0", 1), ("2.0", 2), ("+Inf", 3)]
    with pytest.raises(ValueError, match="different buckets"):
        a.merge(Histogram([1, 3]))


@pytest.mark.parametrize("bounds", [[], [1, math.inf], [math.nan]])
def test_a_histogram_needs_finite_bounds(bounds: list[float]) -> None:
    with pytest.raises(ValueError, match="finite"):
        Histogram(bounds)
