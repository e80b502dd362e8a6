"""A broker-sent ``Basic.Cancel``: the queue is deleted under a consuming route.

Promised (docs/architecture.md): the route re-subscribes when the queue is back — without the app
reconnecting and without anyone restarting it.
"""

from __future__ import annotations

import logging

import pytest
import trio

from trioworker import App, Message, open_app
from trioworker.amqp import NotFoundError, connect

from ._helpers import MUST_HAPPEN, declare, decode, fill, message_count, wait_for

pytestmark = pytest.mark.broker

#: How long the queue stays deleted.
ABSENCE = 1.0
#: Generous bound for the route to pick up messages once the queue is back.
RESUBSCRIBE_WITHIN = 20.0


def recording_app(url: str, queue: str, name: str, *, declare: bool = False) -> tuple[App, list]:
    app = App(url, name=name, grace_period=5)
    handled: list[tuple[int, bool]] = []

    @app.amqp.consume(queue, bulk_size=1, declare=declare)
    async def handle(messages: list[Message]) -> None:
        handled.extend((decode(m.body), m.redelivered) for m in messages)

    return app, handled


async def delete_queue(url: str, queue: str) -> None:
    async with connect(url, connection_name="tw-test-faults-delete") as conn:
        channel = await conn.open_channel()
        await channel.queue_delete(queue)


async def queue_exists(url: str, queue: str) -> bool:
    try:
        await message_count(url, queue)
    except NotFoundError:
        return False
    return True


@pytest.mark.parametrize("route_declares", [False, True], ids=["plain", "declare"])
async def test_route_resubscribes_after_its_queue_was_deleted(
    amqp_url: str, queues, app_name: str, caplog: pytest.LogCaptureFixture, route_declares: bool
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker")
    queue = queues.new()
    await declare(amqp_url, queue)
    app, handled = recording_app(amqp_url, queue, app_name, declare=route_declares)
    supervisor = next(iter(app.amqp.supervisors))

    with trio.fail_after(60):
        async with open_app(app):
            await fill(amqp_url, queue, range(10))
            await wait_for(lambda: len(handled) >= 10, "the first 10 messages handled")

            await delete_queue(amqp_url, queue)  # the broker cancels the app's consumer
            await wait_for(
                lambda: any("cancelled the consumer" in r.getMessage() for r in caplog.records),
                "the route to log the broker's Basic.Cancel",
            )
            await trio.sleep(ABSENCE)
            await declare(amqp_url, queue)  # a no-op when the route re-declared it itself
            await fill(amqp_url, queue, range(10, 20))
            await wait_for(
                lambda: len(handled) >= 20,
                "the 10 messages published after the queue came back",
                within=RESUBSCRIBE_WITHIN,
            )
            await trio.sleep(0.5)  # nothing more may arrive

    assert sorted(i for i, _ in handled) == list(range(20))  # each exactly once
    assert not any(redelivered for _, redelivered in handled)
    assert supervisor.reconnects == 0, "a deleted queue must not cost the connection"
    assert await message_count(amqp_url, queue) == 0


async def test_every_resubscribe_is_prompt(amqp_url: str, queues, app_name: str) -> None:
    """Queue deleted and re-created at once, eight times: each time the route is back fast.

    A healthy route re-subscribes after the first backoff step (≤ 0.1 s). The backoff must
    start over after a successful subscription, as the supervisor's does after a connect.
    """
    queue = queues.new()
    await declare(amqp_url, queue)
    app, handled = recording_app(amqp_url, queue, app_name)
    delays: list[float] = []
    with trio.fail_after(120):
        async with open_app(app):
            for cycle in range(8):
                await delete_queue(amqp_url, queue)
                await declare(amqp_url, queue)
                start = trio.current_time()
                await fill(amqp_url, queue, [cycle])
                await wait_for(
                    lambda c=cycle: len(handled) > c,
                    f"cycle {cycle}: the message published after the re-creation "
                    f"(earlier cycles took {[round(d, 2) for d in delays]} s)",
                    within=3.0,
                )
                delays.append(trio.current_time() - start)
    assert sorted(i for i, _ in handled) == list(range(8))
    assert max(delays) < MUST_HAPPEN
