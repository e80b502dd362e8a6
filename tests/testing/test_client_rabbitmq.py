"""TestClient on the real RabbitMQ: what it can and cannot show, and drain waiting for real."""

from __future__ import annotations

import pytest

from tests.support.broker import Broker
from trioworker import App, Message, Queue, Retry
from trioworker.testing import NeedsMemoryBroker, TestClient

pytestmark = pytest.mark.broker


def make_app(amqp_url: str) -> App:
    # The app's own URL does not matter: the client sends it to broker=.
    return App(amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", name="tc-rabbitmq", grace_period=2)


async def test_fetch_reads_a_queue_and_leaves_its_messages(amqp_url: str, broker: Broker) -> None:
    queue = await broker.queue("kept")
    await broker.publish(queue, b'{"n": 1}', b'{"n": 2}')
    async with TestClient(make_app(amqp_url), broker=amqp_url) as client:
        first = await client.queue(queue).fetch()
        again = await client.queue(queue).fetch()
        assert [m.json() for m in first] == [{"n": 1}, {"n": 2}]
        assert [m.redelivered for m in first] == [False, False]
        # Read, then put back by RabbitMQ: from then on it marks them redelivered.
        assert [(m.json(), m.redelivered) for m in again] == [({"n": 1}, True), ({"n": 2}, True)]
        assert await client.queue(queue).count() == 2
        with pytest.raises(KeyError, match="no queue"):
            await client.queue(broker.name("missing")).fetch()
    assert await broker.ready(queue) == 2


async def test_what_only_the_memory_broker_shows_says_so(amqp_url: str, broker: Broker) -> None:
    queue = await broker.queue("counted")
    async with TestClient(make_app(amqp_url), broker=amqp_url) as client:
        inspector = client.queue(queue)
        for what in ("messages", "acked", "rejected", "requeued", "dead_lettered", "unacked"):
            with pytest.raises(NeedsMemoryBroker, match=r"needs the memory broker.*fetch\(\)"):
                getattr(inspector, what)
        with pytest.raises(NeedsMemoryBroker, match=r"client\.published"):
            _ = client.published
        assert client.broker is None


async def test_drain_waits_for_a_real_retry_delay(amqp_url: str, broker: Broker) -> None:
    app = make_app(amqp_url)
    queue = broker.name("later")
    broker.queues += [f"{queue}.dlq", f"{queue}.retry.300"]
    attempts: list[int] = []

    @app.amqp.consume([Queue(queue)], declare=True, retry=Retry(attempts=2, delays=(0.3,)))
    async def handle(messages: list[Message]) -> None:
        attempts.extend(m.attempt for m in messages)
        if messages[0].attempt == 1:
            raise ConnectionError("once")

    async with TestClient(app, broker=amqp_url) as client:
        await client.publish({}, routing_key=queue)
        await client.drain(timeout=15)
        assert attempts == [1, 2]
        assert await client.queue(f"{queue}.retry.300").count() == 0
