"""``amqp_url="memory://"``: the in-memory broker an app runs for itself.

An app whose connection URLs name an in-memory broker that nobody runs (no test started
one under that name) gets one for as long as its AMQP backend runs, with the vhosts its
URLs name. It is for local development and demos: nothing survives the process, and the
log says so once when it starts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from ...amqp import parse_url
from ._broker import MemoryBroker
from ._registry import lookup

__all__ = ["serve_memory_urls"]

log = logging.getLogger("trioworker.amqp")

#: How many publishes the app's own broker remembers for inspection (it may run for days).
KEEP_PUBLISHED = 1000


@contextlib.asynccontextmanager
async def serve_memory_urls(urls: Iterable[str]) -> AsyncIterator[list[MemoryBroker]]:
    """Run a :class:`MemoryBroker` for every ``memory://`` broker name in ``urls`` that is
    not running yet, for the duration of the block; yield the ones started."""
    wanted: dict[str, set[str]] = {}
    for url in urls:
        params = parse_url(url)
        if params.transport == "memory" and lookup(params.host) is None:
            wanted.setdefault(params.host, {"/"}).add(params.virtual_host)
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for name, vhosts in wanted.items():
            broker = MemoryBroker(name, vhosts=sorted(vhosts), keep_published=KEEP_PUBLISHED)
            await stack.enter_async_context(broker.running())
            log.warning(
                "AMQP runs on an in-memory broker (%s, vhosts %s): it is not durable — "
                "messages and queues are lost when the app stops; use an amqp:// URL for "
                "RabbitMQ",
                broker.url,
                ", ".join(sorted(vhosts)),
            )
            started.append(broker)
        yield started
