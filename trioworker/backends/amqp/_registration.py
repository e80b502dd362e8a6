"""Checks made when a route is registered: what its queues are, and what looks like a
mistake (logged as a warning at registration, not discovered in production).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import quote

from ._routes import AMQPRoute
from ._topology import Queue

__all__ = ["check_stream_route", "split_queues", "vhost_url", "warn_about"]

log = logging.getLogger("trioworker.amqp")

QueueArg = str | Queue | Sequence[str | Queue]


def split_queues(queues: QueueArg) -> tuple[tuple[str, ...], dict[str, Queue]]:
    """The queue names of a route, in order, and the ``Queue`` objects among them."""
    items: Sequence[str | Queue] = (queues,) if isinstance(queues, str | Queue) else queues
    names: list[str] = []
    topology: dict[str, Queue] = {}
    for item in items:
        if isinstance(item, Queue):
            name = item.name
            topology[name] = item
        elif isinstance(item, str):
            name = item
        else:
            raise TypeError(f"a route's queues are names or Queue objects, not {item!r}")
        if name in names:
            raise ValueError(f"queue {name!r} is listed twice")
        names.append(name)
    if not names:
        raise ValueError("consume() needs at least one queue")
    return tuple(names), topology


def warn_about(route: AMQPRoute, others: Sequence[AMQPRoute]) -> None:
    """Log what is legal but most likely not what was meant."""
    if route.bulk_size > route.prefetch:
        log.warning(
            "route %r: bulk_size=%d is capped by prefetch=%d: bulks hold at most %d messages"
            " (raise prefetch= to get bigger bulks)",
            route.name,
            route.bulk_size,
            route.prefetch,
            route.prefetch,
        )
    for other in others:
        if (other.connection, other.vhost) != (route.connection, route.vhost):
            continue
        for queue in set(route.queues).intersection(other.queues):
            log.warning(
                "queue %r is consumed by two routes of this app, %r and %r: they compete for"
                " its messages (each gets some, not all); use one route, or one queue each",
                queue,
                other.name,
                route.name,
            )


def vhost_url(url: str, vhost: str | None) -> str:
    """``url`` with its vhost replaced by ``vhost`` (None: unchanged)."""
    if vhost is None:
        return url
    parts = url.split("?", 1)
    scheme, rest = parts[0].split("://", 1)
    authority = rest.split("/", 1)[0]
    new = f"{scheme}://{authority}/{quote(vhost, safe='')}"
    return new if len(parts) == 1 else f"{new}?{parts[1]}"


def check_stream_route(route: AMQPRoute, *, offset_given: bool) -> None:
    """What a route on a stream cannot do, refused at registration (docs/amqp.md,
    "Streams"): ``retry=`` (its copies would be appended to the stream, for every consumer
    to read again), and ``stream_offset=`` on a route without a stream. (The offset itself
    was checked by ``consume()``, before the handler was given.)"""
    if not route.streams:
        if offset_given:
            raise ValueError(
                f"route {route.name!r}: stream_offset= is for streams: consume a "
                "Queue(name, kind='stream')"
            )
        return
    names = ", ".join(repr(q) for q in route.streams)
    if route.retry is not None:
        raise ValueError(
            f"route {route.name!r}: retry= does not work on a stream ({names}): a stream "
            "keeps every message, and a retried copy would be appended for every consumer "
            "to read again. A failing bulk is read again (on_exception=REQUEUE) or skipped "
            "(on_exception=ACK)"
        )
