"""What ``@app.amqp.consume`` and ``@app.amqp.rpc`` register: a route's configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ...pipeline._actions import Actions
from ...pipeline._handlers import Handler
from ._declare import QueueStateLog, TopologyConflict
from ._retry_policy import Retry
from ._route_stats import RouteStats
from ._streams import StreamOffset, StreamPosition
from ._topology import Queue

__all__ = ["DEFAULT_CONNECTION", "AMQPRoute"]

#: The connection routes and publishes use unless they name another (``App(amqp_url=)``).
DEFAULT_CONNECTION = "default"


@dataclasses.dataclass(eq=False)
class AMQPRoute:
    """A registered route: its configuration, and its counters.

    ``stats`` lives here rather than on a connection's run of the route, so the numbers
    ``app.metrics`` exports keep counting across reconnects.
    """

    handler: Handler
    queues: tuple[str, ...]
    bulk_size: int
    flush_interval: float
    on_success: Actions
    on_exception: Actions
    concurrency: int
    prefetch: int
    connection: str
    vhost: str | None
    declare: bool
    timeout: float | None
    name: str
    #: The ``Queue`` of each queue name the route knows something about: those given as
    #: ``Queue`` objects, and, with ``declare=True``, ``Queue(name)`` for a plain name (what
    #: is declared). A plain name without ``declare`` is absent: nothing is assumed about
    #: its arguments.
    topology: dict[str, Queue] = dataclasses.field(default_factory=dict)
    #: ``retry=`` and ``on_exhausted=`` of ``consume()`` (docs/retries.md).
    retry: Retry | None = None
    on_exhausted: Callable[..., Any] | None = None
    #: Where the route starts reading its streams the first time (docs/amqp.md, "Streams").
    stream_offset: StreamOffset = "next"
    stats: RouteStats = dataclasses.field(init=False, repr=False)
    #: Queues whose declare met a 406 (it will not fix itself): reported in ``/health``,
    #: kept across reconnects like ``stats``, cleared by a declare that succeeds.
    conflicts: dict[str, TopologyConflict] = dataclasses.field(init=False, repr=False)
    #: Per queue, the last problem logged (a problem is logged when it changes).
    queue_logs: dict[str, QueueStateLog] = dataclasses.field(init=False, repr=False)
    #: Per stream the route consumes (given as ``Queue(kind="stream")``), its position.
    #: Kept across reconnects like ``stats``.
    streams: dict[str, StreamPosition] = dataclasses.field(init=False, repr=False)
    #: Plain-named queues found to deliver from a stream (warned about once).
    stream_warned: set[str] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stats = RouteStats(self.queues)
        self.conflicts = {}
        self.queue_logs = {q: QueueStateLog(self.name, q) for q in self.queues}
        self.stream_warned = set()
        self.streams = {
            q: StreamPosition(self.stream_offset)
            for q in self.queues
            if (spec := self.topology.get(q)) is not None and spec.kind == "stream"
        }
        if self.declare:
            for queue in self.queues:
                self.topology.setdefault(queue, Queue(queue))

    def queue_spec(self, queue: str) -> Queue | str:
        """What to declare or check for ``queue``: its ``Queue``, or just the name."""
        return self.topology.get(queue, queue)

    @property
    def effective_bulk_size(self) -> int:
        """``min(bulk_size, prefetch)``: a bulk larger than the prefetch could never fill."""
        return max(1, min(self.bulk_size, self.prefetch))
