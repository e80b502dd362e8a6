"""A nacked publish is published again, on a fresh channel, for a while (the suite's broker).

RabbitMQ nacks publishes to a quorum queue without a reachable leader, and a channel that
published while the leader was being elected keeps nacking (see test_publish_failover.py,
on the cluster). Here a full queue with ``x-overflow=reject-publish`` stands in for the
refusing queue: freed in time, the publish goes through once; still full when the retry
window is over, the caller gets a ``PublishNackedError`` that says why.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from tests.support.broker import Broker
from trioworker import App, open_app
from trioworker.amqp import PublishNackedError
from trioworker.backends.amqp import _publisher

from ._helpers import wait_for

pytestmark = pytest.mark.broker

FULL = {"x-max-length": 1, "x-overflow": "reject-publish"}


async def full_queue(broker: Broker) -> str:
    name = broker.name("full")
    channel = await broker.channel()
    await channel.queue_declare(name, arguments=FULL)
    await broker.publish(name, b"first")
    return name


async def test_a_nacked_publish_goes_through_once_the_queue_takes_it(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await full_queue(broker)
    app = make_app()
    async with open_app(app), trio.open_nursery() as nursery:
        nursery.start_soon(app.amqp.publish, b"second", queue)
        await wait_for(
            lambda: any(s.publisher.renacked >= 2 for s in app.amqp.supervisors), "two nacks"
        )
        channel = await broker.channel()
        first = await channel.basic_get(queue, no_ack=True)  # room for one
        assert first is not None and first.body == b"first"
    assert [d.body for d in await broker.drain(queue)] == [b"second"]


async def test_a_queue_that_keeps_refusing_gets_the_caller_the_nack(
    broker: Broker, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_publisher, "NACK_RETRY_FOR", 1.0)
    queue = await full_queue(broker)
    app = make_app()
    async with open_app(app):
        refused = r"nacked the publish to .* times in 1\.\d s"
        with pytest.raises(PublishNackedError, match=refused) as caught:
            await app.amqp.publish(b"second", queue)
        assert "x-overflow=reject-publish" in str(caught.value)
        assert next(iter(app.amqp.supervisors)).publisher.renacked >= 2
    assert [d.body for d in await broker.drain(queue)] == [b"first"]
