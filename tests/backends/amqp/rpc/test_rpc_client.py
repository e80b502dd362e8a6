"""The RPC client against the real broker: ``app.amqp.call``, ``rpc_client`` outside an app,
direct reply-to shared by concurrent calls, errors and timeouts; and a plain pika client
calling a trioworker route (interop with any AMQP client)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest
import trio

from tests.backends.amqp.rpc.conftest import MUST_HAPPEN, Broker, serving
from trioworker import App, Message, RemoteError, open_app
from trioworker.amqp import NoRouteError, rpc_client
from trioworker.amqp._rpc import REPLY_TO

pytestmark = pytest.mark.broker


async def test_call_returns_the_decoded_reply(make_app: Callable[..., App], broker: Broker) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def add(message: Message) -> dict[str, Any]:
        numbers = message.json()
        return {"sum": sum(numbers), "of": numbers}

    async with open_app(app):
        await serving(app)
        assert await app.amqp.call(queue, [1, 2, 3]) == {"sum": 6, "of": [1, 2, 3]}
        assert await app.amqp.call(queue, []) == {"sum": 0, "of": []}


async def test_remote_exception_raises_remote_error_with_type_and_message(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    class OutOfStock(Exception):
        pass

    @app.amqp.rpc(queue)
    async def order(message: Message) -> None:
        raise OutOfStock(f"no {message.json()['item']} left")

    async with open_app(app):
        await serving(app)
        with pytest.raises(RemoteError) as caught:
            await app.amqp.call(queue, {"item": "apples"})
        # the app still serves after a failed call
        with pytest.raises(RemoteError):
            await app.amqp.call(queue, {"item": "pears"})
    assert caught.value.type == "OutOfStock"
    assert caught.value.message == "no apples left"
    assert await broker.ready(queue) == 0


async def test_call_times_out_and_a_late_reply_is_dropped(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def maybe_slow(message: Message) -> Any:
        if message.json() == "slow":
            await trio.sleep(1.0)
        return message.json()

    async with open_app(app):
        await serving(app)
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await app.amqp.call(queue, "slow", timeout=0.3)
        assert trio.current_time() - start < 0.9
        await trio.sleep(1.0)  # the late reply arrives meanwhile and is dropped
        assert await app.amqp.call(queue, "fast", timeout=MUST_HAPPEN) == "fast"


async def test_call_to_a_queue_that_does_not_exist_fails_at_once(
    make_app: Callable[..., App], broker: Broker
) -> None:
    app = make_app()
    async with open_app(app):
        with trio.fail_after(5):
            with pytest.raises(NoRouteError):
                await app.amqp.call(broker.name("missing"), 1, timeout=30)


async def test_call_needs_a_running_app(make_app: Callable[..., App]) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match="running app"):
        await app.amqp.call("anything", 1)


async def test_concurrent_calls_share_one_reply_consumer_and_get_their_own_answer(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def square(message: Message) -> int:
        n: int = message.json()
        await trio.sleep(random.uniform(0, 0.2))  # replies come back out of order
        return n * n

    async with open_app(app), rpc_client(amqp_url) as client:
        await serving(app)
        results: dict[int, int] = {}

        async def call(n: int) -> None:
            results[n] = await client.call(queue, n, timeout=MUST_HAPPEN)

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(call, n)
            await trio.sleep(0.05)
            assert client.pending > 1  # in flight together
        consumers = list(client.channel._consumers.values())
    assert results == {n: n * n for n in range(200)}
    assert [c.queue for c in consumers] == [REPLY_TO]  # one direct reply-to consumer
    assert client.pending == 0


async def test_rpc_client_works_outside_an_app(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    queue = broker.name("rpc")
    server = make_app()

    @server.amqp.rpc(queue)
    async def upper(message: Message) -> str:
        return str(message.json()).upper()

    async with open_app(server):
        await serving(server)
        # a plain trio program: no App on the calling side
        async with rpc_client(amqp_url) as client:
            assert await client.call(queue, "hello") == "HELLO"
            with pytest.raises(NoRouteError):
                await client.call(broker.name("missing"), "x")
            assert await client.call(queue, "again") == "AGAIN"


async def test_calls_in_flight_fail_when_the_client_channel_dies(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def never(message: Message) -> None:
        await trio.sleep(60)

    async with open_app(app), rpc_client(amqp_url) as client:
        await serving(app)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await client.call(queue, 1, timeout=60)
            except Exception as exc:
                errors.append(exc)

        with trio.fail_after(MUST_HAPPEN):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                while client.pending == 0:  # noqa: ASYNC110 - polling
                    await trio.sleep(0.01)
                await client.channel.close()
    assert len(errors) == 1
    assert not isinstance(errors[0], TimeoutError)


def pika_call(url: str, queue: str, body: bytes, timeout: float) -> tuple[bytes, Any, str]:
    """The classic pika RPC client: an exclusive reply queue, reply_to + correlation_id."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        declared = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        reply_queue = declared.method.queue
        correlation_id = str(uuid.uuid4())
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(
                reply_to=reply_queue,
                correlation_id=correlation_id,
                content_type="application/json",
            ),
        )
        for method, properties, reply in channel.consume(
            reply_queue, auto_ack=True, inactivity_timeout=timeout
        ):
            if method is None:
                raise TimeoutError("no reply")
            if properties.correlation_id == correlation_id:
                channel.cancel()
                return reply, properties.headers, properties.content_type
        raise AssertionError("unreachable")
    finally:
        connection.close()


async def test_a_plain_pika_client_gets_the_answer(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def add(message: Message) -> dict[str, int]:
        return {"sum": sum(message.json())}

    broker.queues.append(queue + ".fail")  # deleted at teardown

    @app.amqp.rpc(queue + ".fail")
    async def fail(message: Message) -> None:
        raise KeyError("nope")

    async with open_app(app):
        await serving(app)
        body, headers, content_type = await trio.to_thread.run_sync(
            pika_call, amqp_url, queue, b"[20, 22]", MUST_HAPPEN
        )
        error_body, error_headers, _ = await trio.to_thread.run_sync(
            pika_call, amqp_url, queue + ".fail", b"{}", MUST_HAPPEN
        )
    assert json.loads(body) == {"sum": 42}
    assert content_type == "application/json"
    assert not headers
    assert json.loads(error_body) == {"error": {"type": "KeyError", "message": "'nope'"}}
    assert error_headers == {"x-trioworker-error": True}
