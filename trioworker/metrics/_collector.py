"""Prometheus metrics of an app: ``app.metrics``, served as ``GET /metrics``.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (tests, or a program running two workers) never share or clash on metric names.

Nothing is recorded through prometheus-client calls. The AMQP consume path handles tens of
thousands of messages a second, so the backend bumps plain ``int`` attributes (per route and
queue: ``RouteStats``; per bulk: ``BatcherStats``; per connection: the supervisor) and
:meth:`Metrics.collect` turns them into metric families when Prometheus scrapes. HTTP requests
are counted the same way, into :class:`~trioworker.pipeline.Histogram` s, which also keeps
the exposition free of the ``_created`` series prometheus-client's own metrics add.

See docs/metrics.md for every metric, its labels and example queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..pipeline._histogram import Histogram
from ._families import add_histogram

__all__ = ["HTTP_BUCKETS", "Metrics", "MetricsSource"]

#: What a backend registers with :meth:`Metrics.add_source`: called at every scrape, it
#: builds that backend's metric families from its counters.
MetricsSource = Callable[[], Iterable[Metric]]

#: HTTP latency buckets (seconds): from a cached answer to a slow upstream call.
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_HTTPKey = tuple[str, str, str]  # method, route template, status


class Metrics:
    """The app's metrics: :meth:`render` for the exposition, recorders for the backends.

    ``app.metrics`` is created with the app, which adds each backend's
    :data:`MetricsSource`; the sources are read at every :meth:`render`, so the numbers
    are current and nothing has to be recorded on the hot path. Metrics knows no backend:
    each builds its own families (``backends/amqp/_metrics.py``, ...).
    """

    def __init__(self) -> None:
        self.sources: list[MetricsSource] = []
        self._http: dict[_HTTPKey, Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def add_source(self, source: MetricsSource) -> None:
        """Call ``source()`` at every scrape and export the metric families it yields."""
        self.sources.append(source)

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

    def collect(self) -> Iterator[Metric]:
        """Every metric family, built now from the sources' counters and the HTTP requests."""
        for source in self.sources:
            yield from source()
        yield from self._http_families()

    def _http_families(self) -> Iterator[Metric]:
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
        for key, histogram in list(self._http.items()):
            requests.add_metric(list(key), histogram.count)
            add_histogram(durations, list(key), histogram)
        yield requests
        yield durations


class _Collector(Collector):
    """What the registry scrapes: the families :meth:`Metrics.collect` builds."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
