"""The SSE backend's Prometheus metric families, built from each stream's counters at
scrape time. See docs/metrics.md for every metric and its labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ...metrics import add_histogram, merged
from ...pipeline._batcher import OUTCOMES
from ...pipeline._histogram import DURATION_BOUNDS, SIZE_BOUNDS
from ._stream import SSEStream, StreamRun, StreamStats

__all__ = ["sse_families"]


def sse_families(streams: Iterable[SSEStream], runs: Iterable[StreamRun]) -> Iterator[Metric]:
    """The families of every registered stream (``streams``); ``runs``, the running ones,
    say which are connected."""
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
        "Time of one handler call (one bulk), failed ones and their on_exception hook included.",
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
    by_name: dict[str, list[StreamStats]] = {}
    for stream in streams:
        by_name.setdefault(stream.name, []).append(stream.stats)
    up = {run.stream.name for run in runs if run.connected}
    for name, stats in by_name.items():
        for attr, family in counters.items():
            family.add_metric([name], sum(getattr(st, attr) for st in stats))
        batchers = [st.batcher for st in stats]
        add_histogram(bulk_sizes, [name], merged(SIZE_BOUNDS, [b.bulk_sizes for b in batchers]))
        total = merged(
            DURATION_BOUNDS,
            (b.durations[outcome] for b in batchers for outcome in OUTCOMES),
        )
        add_histogram(durations, [name], total)
        running.add_metric([name], sum(b.running for b in batchers))
        connected.add_metric([name], int(name in up))

    yield from counters.values()
    yield bulk_sizes
    yield durations
    yield running
    yield connected
