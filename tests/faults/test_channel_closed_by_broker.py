"""A channel the broker closes takes its buffered deliveries with it (issue 11, #2).

With ``consumer_timeout`` 5 s and one 10 s bulk at prefetch 1024, 3,000 messages gave 4,024
handler calls: after the broker closed the channel, its buffered deliveries were still
handed to the handler (their acks could never be sent), and handled again once redelivered.
Now, on a channel close, the deliveries not yet handed over are dropped (the broker
redelivers them); the running call finishes and its decisions are dropped and counted, and
the "N decisions dropped" log lines add up to the ``dropped`` metric.

On a private node whose ``consumer_timeout`` is 2 s (checked every 0.5 s): the first bulk
sleeps past it, so the broker closes the channel under it with 406 PRECONDITION_FAILED.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable

import pytest
import trio

from tests.support.private_node import PrivateNode
from trioworker import App, Message, open_app
from trioworker.amqp import connect

from ._helpers import declare, fill, message_count, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOTAL = 300
PREFETCH = 100
BULK = 10


async def test_a_consumer_timeout_does_not_hand_over_the_dead_channels_deliveries(
    private_node: PrivateNode, unique_name: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker.amqp")
    url = private_node.amqp_url
    queue = unique_name("timeout")
    await declare(url, queue)
    await fill(url, queue, range(TOTAL))
    handled: Counter[int] = Counter()
    done: set[int] = set()  # ids whose handling ended on a channel still open
    calls = 0
    app = App(amqp_url=url, name=unique_name("app"), grace_period=5.0)

    @app.amqp.consume(queue, bulk_size=BULK, prefetch=PREFETCH, flush_interval=0.05)
    async def handle(messages: list[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await trio.sleep(3.5)  # past the consumer_timeout: the broker closes the channel
        handled.update(int(m.body) for m in messages)
        channel = messages[0]._tracker.channel if messages[0]._tracker else None
        if channel is not None and not channel.is_closed:
            done.update(int(m.body) for m in messages)

    try:
        with private_node.app_env(consumer_timeout=2000, channel_tick_interval=500):
            async with open_app(app):
                await wait_for(lambda: len(done) == TOTAL, "every message handled", within=60)
                await trio.sleep(0.5)  # the last acks reach the broker
                assert await message_count(url, queue) == 0
        stats = app.amqp.routes[0].stats.queue(queue)
        closed = [r for r in caplog.records if "closed by the broker" in r.getMessage()]
        assert closed, "the broker did not close the channel: the test proves nothing"
        # Only the bulk running on the dead channel is handled twice; its buffered
        # deliveries (up to the prefetch) never reached the handler.
        assert sum(handled.values()) <= TOTAL + BULK, (
            f"{sum(handled.values())} handlings of {TOTAL} messages: the dead channel's "
            "buffered deliveries were handed to the handler"
        )
        assert stats.acked == TOTAL  # every message acked once (the broker's queue is empty)
        logged = [
            int(m.group(1))
            for r in caplog.records
            if (m := re.search(r"(\d+) decisions dropped", r.getMessage()))
        ]
        assert stats.dropped == BULK
        assert sum(logged) == stats.dropped, f"log lines say {logged}, the metric {stats.dropped}"
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(20):
            async with connect(url, connection_name="tw-test-cleanup") as conn:
                channel = await conn.open_channel()
                await channel.queue_delete(queue)
