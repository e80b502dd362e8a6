"""The AMQP backend's Prometheus metric families, built from its plain counters at scrape
time (``RouteStats`` per route and queue, ``BatcherStats`` per bulk, the supervisors' own
counts). See docs/metrics.md for every metric and its labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ...metrics import add_histogram, merged
from ...pipeline import BatcherStats
from ...pipeline._batcher import OUTCOMES
from ...pipeline._histogram import DURATION_BOUNDS, SIZE_BOUNDS

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["amqp_families"]


def amqp_families(supervisors: Iterable[Supervisor]) -> Iterator[Metric]:
    """The families of the AMQP backend whose connections ``supervisors`` keep up."""
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
            (
                "retried",
                "Messages sent to a delay queue for another attempt (retry=), confirmed.",
            ),
            (
                "dead_lettered",
                "Messages the route sent to its dead-letter queue (retry=: attempts "
                "exhausted, an exception in never, or rejected), confirmed.",
            ),
            (
                "exhausted",
                "Messages dead-lettered because their attempts ran out or their exception "
                "is in never (retry=).",
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
        "1 while the AMQP connection is open, 0 while it is down or reconnecting "
        '(publishers: connection="<name>:publish").',
        labels=["connection"],
    )
    blocked = GaugeMetricFamily(
        "trioworker_amqp_connection_blocked",
        "1 while the broker blocks the publishing connection (a memory or disk alarm).",
        labels=["connection"],
    )
    on_node = GaugeMetricFamily(
        "trioworker_amqp_connected_node",
        "1 for the node (host:port) the connection is open to, 0 for its other nodes "
        "(a cluster's URLs); all 0 while it is down.",
        labels=["connection", "node"],
    )

    # Two routes may share a name on one connection (the default name is the handler's
    # qualified name); their numbers are added up so no series appears twice.
    queue_counts: dict[tuple[str, str, str], list[int]] = {}
    bulk_stats: dict[tuple[str, str], list[BatcherStats]] = {}
    live: dict[tuple[str, str], list[int]] = {}
    for sup in supervisors:
        connection = sup.name
        reconnects.add_metric([connection], sup.reconnects)
        up.add_metric([connection], 1 if sup.up else 0)
        for node in sup.nodes:
            on_node.add_metric([connection, node], 1 if node == sup.node else 0)
        publishing = sup.publishing
        if publishing.publisher.wanted:  # the publishing connection, once opened
            reconnects.add_metric([f"{connection}:publish"], publishing.reconnects)
            up.add_metric([f"{connection}:publish"], 1 if publishing.up else 0)
            blocked.add_metric([f"{connection}:publish"], 1 if publishing.blocked else 0)
            for node in sup.nodes:
                current = publishing.node
                on_node.add_metric([f"{connection}:publish", node], 1 if node == current else 0)
        for route in sup.routes:
            for queue, c in route.stats.queues.items():
                counts = queue_counts.setdefault((route.name, queue, connection), [0] * 8)
                values = (
                    c.received,
                    c.acked,
                    c.rejected,
                    c.requeued,
                    c.dropped,
                    c.retried,
                    c.dead_lettered,
                    c.exhausted,
                )
                for i, n in enumerate(values):
                    counts[i] += n
            bulk_stats.setdefault((route.name, connection), []).append(route.stats.batcher)
        for run in sup.runs():
            gauge = live.setdefault((run.route.name, connection), [0])
            gauge[0] += run.buffered()

    for queue_labels, counts in queue_counts.items():
        received.add_metric(list(queue_labels), counts[0])
        for metric, n in zip(settled.values(), counts[1:], strict=True):
            metric.add_metric(list(queue_labels), n)
    for (route_name, connection), stats in bulk_stats.items():
        labels = [route_name, connection]
        add_histogram(bulk_sizes, labels, merged(SIZE_BOUNDS, [s.bulk_sizes for s in stats]))
        flushes.add_metric([*labels, "size"], sum(s.flushed_by_size for s in stats))
        flushes.add_metric([*labels, "time"], sum(s.flushed_by_time for s in stats))
        for outcome in OUTCOMES:
            total = merged(DURATION_BOUNDS, (s.durations[outcome] for s in stats))
            add_histogram(durations, [*labels, outcome], total)
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
    yield blocked
    yield on_node
