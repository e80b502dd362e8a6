"""Prometheus metrics of an app: ``app.metrics``, served as ``GET /metrics``.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (tests, or a program running two workers) never share or clash on metric names.

Nothing is recorded through prometheus-client calls. The AMQP consume path handles tens of
thousands of messages a second, so the backend bumps plain ``int`` attributes (per route and
queue: ``RouteStats``; per bulk: ``BatcherStats``; per connection: the supervisor) and
:class:`_Collector` turns them into metric families when Prometheus scrapes. HTTP requests
are counted the same way, into :class:`~trioworker.pipeline.Histogram` s, which also keeps
the exposition free of the ``_created`` series prometheus-client's own metrics add.

See docs/metrics.md for every metric, its labels and example queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..pipeline._batcher import OUTCOMES, BatcherStats
from ..pipeline._histogram import DURATION_BOUNDS, SIZE_BOUNDS, Histogram

if TYPE_CHECKING:
    from .._app import App
    from ..backends.sse._stream import StreamStats

__all__ = ["HTTP_BUCKETS", "Metrics"]

#: HTTP latency buckets (seconds): from a cached answer to a slow upstream call.
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_HTTPKey = tuple[str, str, str]  # method, route template, status


class Metrics:
    """The app's metrics: :meth:`render` for the exposition, recorders for the backends.

    ``app.metrics`` is created with the app; the AMQP numbers are read from the running
    backend at every :meth:`render`, so there is nothing to register or start.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self._http: dict[_HTTPKey, Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its ``Content-Type`` header value.

        Synchronous and quick (it reads counters, it does no I/O): call it straight from a
        request handler.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request and observe how long it took.

        ``route`` must be the route *template* (``/hello/{name}``), never the concrete path:
        a label value per URL would grow the number of series without bound. Requests that
        matched no route are best reported under one fixed template (e.g. ``"<unmatched>"``).
        """
        if seconds < 0:
            raise ValueError(f"a request cannot take {seconds} s")
        key = (method.upper(), route, str(int(status)))
        histogram = self._http.get(key)
        if histogram is None:
            histogram = self._http[key] = Histogram(HTTP_BUCKETS)
        histogram.observe(seconds)


class _Collector(Collector):
    """Builds every metric family from the app's plain counters at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._amqp()
        yield from self._http()
        yield from self._sse()

    # ---------------------------------------------------------------- AMQP

    def _amqp(self) -> Iterator[Metric]:
        route_labels = ["route", "queue", "connection"]
        received = CounterMetricFamily(
            "trioworker_amqp_messages_received",
            "Deliveries handed to a route, by route, queue and connection.",
            labels=route_labels,
        )
        settled = {
            kind: CounterMetricFamily(
                f"trioworker_amqp_messages_{kind}",
                text,
                labels=route_labels,
            )
            for kind, text in (
                ("acked", "Messages acknowledged (done), by route, queue and connection."),
                (
                    "rejected",
                    "Messages rejected without requeue (dead-lettered or dropped by the broker).",
                ),
                (
                    "requeued",
                    "Messages returned to their queue: handler failure, per-message requeue, "
                    "or unhandled at shutdown.",
                ),
                (
                    "dropped",
                    "Decisions not sent because the delivery's channel was gone; the broker "
                    "redelivers those messages.",
                ),
            )
        }
        bulk_labels = ["route", "connection"]
        bulk_sizes = HistogramMetricFamily(
            "trioworker_amqp_bulk_size",
            "Messages per bulk handed to a route's handler.",
            labels=bulk_labels,
        )
        flushes = CounterMetricFamily(
            "trioworker_amqp_bulks_flushed",
            'Bulks formed, by why: reason="size" (full) or "time" (flush_interval passed).',
            labels=[*bulk_labels, "reason"],
        )
        durations = HistogramMetricFamily(
            "trioworker_amqp_handler_duration_seconds",
            "Time of one handler call (one bulk), by outcome: ok, error, timeout, cancelled.",
            labels=[*bulk_labels, "outcome"],
        )
        running = GaugeMetricFamily(
            "trioworker_amqp_handlers_running",
            "Handler calls in progress.",
            labels=bulk_labels,
        )
        buffered = GaugeMetricFamily(
            "trioworker_amqp_messages_buffered",
            "Deliveries received and not yet handed to a handler (buffered, or in a bulk "
            "still filling up).",
            labels=bulk_labels,
        )
        reconnects = CounterMetricFamily(
            "trioworker_amqp_reconnects",
            "Connections lost or refused, each followed by a reconnect attempt.",
            labels=["connection"],
        )
        up = GaugeMetricFamily(
            "trioworker_amqp_connection_up",
            "1 while the AMQP connection is open, 0 while it is down or reconnecting.",
            labels=["connection"],
        )

        # Two routes may share a name on one connection (the default name is the handler's
        # qualified name); their numbers are added up so no series appears twice.
        queue_counts: dict[tuple[str, str, str], list[int]] = {}
        bulk_stats: dict[tuple[str, str], list[BatcherStats]] = {}
        live: dict[tuple[str, str], list[int]] = {}
        for sup in self.metrics.app.amqp.supervisors:
            connection = sup.name
            conn = sup.connection
            reconnects.add_metric([connection], sup.reconnects)
            up.add_metric([connection], 0 if conn is None or conn.is_closed else 1)
            for route in sup.routes:
                for queue, c in route.stats.queues.items():
                    counts = queue_counts.setdefault((route.name, queue, connection), [0] * 5)
                    for i, n in enumerate((c.received, c.acked, c.rejected, c.requeued, c.dropped)):
                        counts[i] += n
                bulk_stats.setdefault((route.name, connection), []).append(route.stats.batcher)
            for run in sup._runs:
                if run.connection.is_closed:
                    continue  # what it still buffers is lost with it: the broker redelivers
                key = (run.route.name, connection)
                gauge = live.setdefault(key, [0])
                gauge[0] += run.batcher.waiting

        for queue_labels, counts in queue_counts.items():
            received.add_metric(list(queue_labels), counts[0])
            for metric, n in zip(settled.values(), counts[1:], strict=True):
                metric.add_metric(list(queue_labels), n)
        for (route_name, connection), stats in bulk_stats.items():
            labels = [route_name, connection]
            _add_histogram(bulk_sizes, labels, _merged(SIZE_BOUNDS, [s.bulk_sizes for s in stats]))
            flushes.add_metric([*labels, "size"], sum(s.flushed_by_size for s in stats))
            flushes.add_metric([*labels, "time"], sum(s.flushed_by_time for s in stats))
            for outcome in OUTCOMES:
                merged = _merged(DURATION_BOUNDS, (s.durations[outcome] for s in stats))
                _add_histogram(durations, [*labels, outcome], merged)
            running.add_metric(labels, sum(s.running for s in stats))
            buffered.add_metric(labels, live.get((route_name, connection), [0])[0])

        yield received
        yield from settled.values()
        yield bulk_sizes
        yield flushes
        yield durations
        yield running
        yield buffered
        yield reconnects
        yield up

    # ---------------------------------------------------------------- HTTP

    def _http(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "trioworker_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            labels=labels,
        )
        durations = HistogramMetricFamily(
            "trioworker_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status code.",
            labels=labels,
        )
        for key, histogram in list(self.metrics._http.items()):
            requests.add_metric(list(key), histogram.count)
            _add_histogram(durations, list(key), histogram)
        yield requests
        yield durations

    # ----------------------------------------------------------------- SSE

    def _sse(self) -> Iterator[Metric]:
        labels = ["stream"]
        counters = {
            attr: CounterMetricFamily(f"trioworker_sse_{name}", text, labels=labels)
            for attr, name, text in (
                ("received", "events_received", "Events read from the stream."),
                (
                    "handled",
                    "events_handled",
                    "Events whose handler call finished, successfully or not.",
                ),
                (
                    "failed",
                    "events_failed",
                    "Events in handler calls that raised or timed out (they are not retried).",
                ),
                (
                    "dropped",
                    "events_dropped",
                    "Events never handed to the handler: the grace period ran out at stop.",
                ),
                (
                    "reconnects",
                    "reconnects",
                    "Reconnects: the stream failed, or the server ended it.",
                ),
            )
        }
        bulk_sizes = HistogramMetricFamily(
            "trioworker_sse_bulk_size", "Events per bulk handed to the handler.", labels=labels
        )
        durations = HistogramMetricFamily(
            "trioworker_sse_handler_duration_seconds",
            "Time of one handler call (one bulk), failed ones and their on_exception hook "
            "included.",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "trioworker_sse_handlers_running", "Handler calls in progress.", labels=labels
        )
        connected = GaugeMetricFamily(
            "trioworker_sse_stream_connected",
            "1 while the stream's response is being read, 0 while it is reconnecting or the "
            "app is not running.",
            labels=labels,
        )

        # Two streams may share a name (the default name is the URL without its query):
        # their numbers are added up so no series appears twice.
        sse = self.metrics.app.sse
        by_name: dict[str, list[StreamStats]] = {}
        for stream in sse.streams:
            by_name.setdefault(stream.name, []).append(stream.stats)
        up = {run.stream.name for run in sse.runs if run.connected}
        for name, stats in by_name.items():
            for attr, family in counters.items():
                family.add_metric([name], sum(getattr(st, attr) for st in stats))
            batchers = [st.batcher for st in stats]
            _add_histogram(
                bulk_sizes, [name], _merged(SIZE_BOUNDS, [b.bulk_sizes for b in batchers])
            )
            merged = _merged(
                DURATION_BOUNDS,
                (b.durations[outcome] for b in batchers for outcome in OUTCOMES),
            )
            _add_histogram(durations, [name], merged)
            running.add_metric([name], sum(b.running for b in batchers))
            connected.add_metric([name], int(name in up))

        yield from counters.values()
        yield bulk_sizes
        yield durations
        yield running
        yield connected


def _merged(bounds: tuple[float, ...], histograms: Iterable[Histogram]) -> Histogram:
    total = Histogram(bounds)
    for histogram in histograms:
        total.merge(histogram)
    return total


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.cumulative(), h.sum)
