"""A memory alarm blocks publishers only: the consumers keep acknowledging (issue 11, #1).

During a memory or disk alarm RabbitMQ stops reading every connection that publishes. When
publishing and consuming shared one connection, its acks were no longer read either, and
its consumers stalled at the prefetch — the very consumers that would drain the backlog
(seen: +200 messages, then +0 for 10 s). Publishers now have their own connection.

On a private node (never the shared broker's settings): an app consumes a backlog while it
publishes; a memory alarm comes; the route must go on consuming (acks flow), publishing
waits (``timeout=`` gives a clear ``TimeoutError``), ``/health`` names the blocked
publisher and the broker's reason; once the alarm is cleared, the waiting publish completes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from tests.metrics._scrape import scrape, value
from tests.support.private_node import PrivateNode
from trioworker import App, Message, open_app
from trioworker.amqp import connect

from ._helpers import declare, fill, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BACKLOG = 3_000
#: Handler time per bulk of 10: ~500 msg/s, so the backlog outlasts the alarm's start.
PACE = 0.02
PUBLISH = "default:publish"  # the publishing connection's label in the metrics


async def test_a_memory_alarm_blocks_publishing_but_not_consuming(
    private_node: PrivateNode, unique_name: Callable[..., str]
) -> None:
    url = private_node.amqp_url
    work, out = unique_name("work"), unique_name("out")
    await declare(url, work, out)
    await fill(url, work, range(BACKLOG))
    handled: list[int] = []
    published = 0
    app = App(amqp_url=url, name=unique_name("app"), grace_period=5.0)

    @app.amqp.consume(work, bulk_size=10, prefetch=20)
    async def handle(messages: list[Message]) -> None:
        await trio.sleep(PACE)
        handled.extend(int(m.body) for m in messages)

    async def publish_forever() -> None:
        nonlocal published
        while True:
            await app.amqp.publish(b"x", routing_key=out)
            published += 1

    alarm = False
    try:
        async with open_app(app), trio.open_nursery() as nursery:
            nursery.start_soon(publish_forever)
            await wait_for(lambda: len(handled) >= 300 and published >= 50, "a running start")
            await trio.to_thread.run_sync(private_node.set_memory_alarm, True)
            alarm = True
            sup = next(iter(app.amqp.supervisors))

            def publisher_blocked() -> bool:
                conn = sup.publisher.connection
                return conn is not None and conn.is_blocked

            await wait_for(publisher_blocked, "the broker blocks the publish connection")
            health = app.health()["amqp"]
            assert not health.ok
            assert "blocked by the broker" in health.detail
            assert "memory" in health.detail, health.detail  # the broker's reason
            samples = scrape(app)
            assert value(samples, "trioworker_amqp_connection_blocked", connection=PUBLISH) == 1
            assert value(samples, "trioworker_amqp_connection_up", connection=PUBLISH) == 1

            await trio.sleep(1)  # confirms of publishes that got in before the block
            stuck = published
            # Consuming goes on while the alarm lasts: acks are read, deliveries keep coming.
            at_alarm = len(handled)
            await wait_for(
                lambda: len(handled) >= min(BACKLOG, at_alarm + 1_000),
                "the consumers go on during the alarm (their acks are read)",
                within=15,
            )
            assert publisher_blocked()
            assert published == stuck, "a publish got through the alarm"
            assert sup.publisher.connection is not sup.connection

            # A publish with a timeout says so clearly; one without waits for the alarm's end.
            started = trio.current_time()
            with pytest.raises(TimeoutError, match=r"within 1 s .* blocks publishing"):
                await app.amqp.publish(b"late", routing_key=out, timeout=1)
            assert trio.current_time() - started < 3
            done = trio.Event()

            async def publish_after_alarm() -> None:
                await app.amqp.publish(b"after", routing_key=out)
                done.set()

            nursery.start_soon(publish_after_alarm)
            await trio.sleep(0.5)
            assert not done.is_set()
            await trio.to_thread.run_sync(private_node.set_memory_alarm, False)
            alarm = False
            with trio.fail_after(30):
                await done.wait()
            await wait_for(lambda: published > stuck + 10, "publishing resumes")
            await wait_for(lambda: app.health()["amqp"].ok, "healthy again")
            await wait_for(lambda: len(set(handled)) == BACKLOG, "the whole backlog handled")
            nursery.cancel_scope.cancel()
    finally:
        if alarm:
            await trio.to_thread.run_sync(private_node.set_memory_alarm, False)
        with trio.CancelScope(shield=True), trio.move_on_after(20):
            async with connect(url, connection_name="tw-test-cleanup") as conn:
                channel = await conn.open_channel()
                for name in (work, out):
                    await channel.queue_delete(name)
