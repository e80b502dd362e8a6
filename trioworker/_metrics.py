"""Prometheus metrics of an app: ``app.metrics``, served as ``GET /metrics``.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (tests, or a program running two workers) never share or clash on metric names.

The AMQP consume path handles tens of thousands of messages a second, so it does not call
``Counter.inc()`` per message: the backend bumps plain ``int`` attributes (per route and
queue, per connection) and :class:`_AMQPCollector` turns them into metric families when
Prometheus scrapes. HTTP requests are few by comparison and use ordinary prometheus-client
metrics. See docs/metrics.md for every metric and example queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Metrics"]

#: HTTP latency buckets (seconds): from a cached answer to a slow upstream call.
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The app's metrics: :meth:`render` for the exposition, recorders for the backends."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_AMQPCollector(app))
        self._http_requests = Counter(
            "trioworker_http_requests",
            "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._http_duration = Histogram(
            "trioworker_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its ``Content-Type`` header value."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request and observe how long it took.

        ``route`` must be the route *template* (``/hello/{name}``), never the concrete path:
        one label value per URL would grow the series without bound.
        """
        labels = (method.upper(), route, str(status))
        self._http_requests.labels(*labels).inc()
        self._http_duration.labels(*labels).observe(seconds)


class _AMQPCollector(Collector):
    """Reads the AMQP backend's plain counters at scrape time."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        reconnects = CounterMetricFamily(
            "trioworker_amqp_reconnects",
            "Connection losses and refused attempts, each followed by a reconnect attempt.",
            labels=["connection"],
        )
        up = GaugeMetricFamily(
            "trioworker_amqp_connection_up",
            "1 while the AMQP connection is open, 0 while it is down or reconnecting.",
            labels=["connection"],
        )
        for sup in self.app.amqp.supervisors:
            conn = sup.connection
            reconnects.add_metric([sup.name], sup.reconnects)
            up.add_metric([sup.name], 0 if conn is None or conn.is_closed else 1)
        yield reconnects
        yield up
