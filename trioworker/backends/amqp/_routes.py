"""What ``@app.amqp.consume`` and ``@app.amqp.rpc`` register: a route's configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ...pipeline._actions import Actions
from ...pipeline._handlers import Handler
from ._retry_policy import Retry
from ._route_stats import RouteStats

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
    #: ``retry=`` and ``on_exhausted=`` of ``consume()`` (docs/retries.md).
    retry: Retry | None = None
    on_exhausted: Callable[..., Any] | None = None
    stats: RouteStats = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stats = RouteStats(self.queues)

    @property
    def effective_bulk_size(self) -> int:
        """``min(bulk_size, prefetch)``: a bulk larger than the prefetch could never fill."""
        return max(1, min(self.bulk_size, self.prefetch))
