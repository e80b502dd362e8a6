"""A route reading a replicated stream fails over without skipping or rereading the log.

A stream on three nodes holds 3,000 messages. One worker reads it from ``"first"``,
connected to node 1 (its URLs: 1, 2, 3), handling bulks slowly enough that the kill comes
mid-run: node 1 is ``kill -9``-ed. RabbitMQ keeps no position for an AMQP 0-9-1 consumer;
the route's own position must carry it: on node 2 it goes on from the first message it had
not handled — not from ``"first"`` again (3,000 handled twice), not from ``"next"`` (the
rest skipped). Handled twice: at most what the dead connection held in flight.
"""

from __future__ import annotations

import secrets
from collections import Counter

import pytest
import trio

from tests.support.cluster import Cluster
from trioworker import App, Message, Queue, open_app

from ._helpers import declare, delete_queues, fill, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TOTAL = 3_000
PREFETCH = 200
BULK = 50


async def test_a_stream_route_fails_over_from_where_it_was(healthy_cluster: Cluster) -> None:
    cluster = healthy_cluster
    n1, n2, n3 = cluster.nodes
    name = f"tw-cluster-stream-{secrets.token_hex(4)}"
    await declare(n2.amqp_url, name, {"x-queue-type": "stream", "x-initial-cluster-size": 3})
    handled: list[int] = []
    try:
        await fill(n2.amqp_url, name, range(TOTAL))
        app = App(
            amqp_url=[n1.amqp_url, n2.amqp_url, n3.amqp_url],
            name="tw-cluster-stream-reader",
            prefetch=PREFETCH,
            grace_period=5,
        )

        @app.amqp.consume(
            Queue(name, kind="stream"), bulk_size=BULK, flush_interval=0.05, stream_offset="first"
        )
        async def read(messages: list[Message]) -> None:
            await trio.sleep(0.02)
            for m in messages:
                assert m.stream_offset == int(m.body)  # the offset is the message's id
                handled.append(int(m.body))

        async with open_app(app):
            await wait_for(lambda: len(handled) >= TOTAL // 3, "a third read")
            await trio.to_thread.run_sync(cluster.kill, n1)
            at_kill = len(handled)
            await wait_for(lambda: set(handled) >= set(range(TOTAL)), "every message", 120)
            await trio.sleep(0.5)  # nothing more comes
        assert at_kill < TOTAL, "the kill came too late to test anything"
        twice = {i: n for i, n in Counter(handled).items() if n > 1}
        assert len(twice) <= PREFETCH, f"{len(twice)} handled twice: more than one window"
        assert all(n == 2 for n in twice.values()), twice
    finally:
        await delete_queues(cluster, name)
