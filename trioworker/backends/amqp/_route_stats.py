"""What an AMQP route has done so far: plain counters, read by ``app.metrics`` at scrape time.

They belong to the route, not to one connection's run of it, so they keep counting across
reconnects. The consume path bumps them once per batch of deliveries (received) and once
per settled bulk (decisions), never through a prometheus-client call: at tens of thousands
of messages a second, a lock and a label lookup per message would show.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...pipeline._actions import Actions
from ...pipeline._batcher import BatcherStats

__all__ = ["QueueCounters", "RouteStats"]


class QueueCounters:
    """Deliveries of one queue to one route, and the decisions taken for them.

    ``received`` counts deliveries handed to the route. ``acked``, ``rejected`` and
    ``requeued`` count the decisions sent for them (``requeued`` includes messages returned
    unhandled at shutdown). ``dropped`` counts decisions that could not be sent because the
    delivery's channel was gone: the broker redelivers those messages, so they are received
    (and handled) again. Deliveries still buffered when a connection dies get no decision
    at all; they are simply received again.

    With ``retry=`` (docs/retries.md): ``retried`` counts messages sent to a delay queue,
    ``dead_lettered`` messages the route sent to its dead-letter queue (attempts exhausted,
    an exception in ``never``, or rejected), and ``exhausted`` those of them whose attempts
    ran out or whose exception was in ``never``. Their originals are acknowledged once the
    copy is confirmed, but they are not counted in ``acked``.
    """

    __slots__ = (
        "acked",
        "dead_lettered",
        "dropped",
        "exhausted",
        "received",
        "rejected",
        "requeued",
        "retried",
    )

    def __init__(self) -> None:
        self.received = 0
        self.dropped = 0
        self.acked = 0
        self.rejected = 0
        self.requeued = 0
        self.retried = 0
        self.dead_lettered = 0
        self.exhausted = 0

    def count(self, action: Actions, n: int = 1) -> None:
        """Add ``n`` decisions of kind ``action``."""
        if action is Actions.ACK:
            self.acked += n
        elif action is Actions.REJECT:
            self.rejected += n
        else:
            self.requeued += n


class RouteStats:
    """A route's counters: one :class:`QueueCounters` per queue, and its batcher's stats."""

    __slots__ = ("batcher", "queues")

    def __init__(self, queues: Iterable[str]) -> None:
        self.queues = {queue: QueueCounters() for queue in queues}
        self.batcher = BatcherStats()

    def queue(self, name: str) -> QueueCounters:
        """The counters of queue ``name`` (created on first use)."""
        counters = self.queues.get(name)
        if counters is None:
            counters = self.queues[name] = QueueCounters()
        return counters
