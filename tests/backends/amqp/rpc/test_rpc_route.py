"""RPC routes against the real broker: replies, requests without reply_to, errors, timeouts.

Requests are published by hand (trioworker's client, already tested on its own) to see
exactly what the route sends back: the reply's routing (default exchange, ``reply_to``),
its ``correlation_id``, its body and headers. Whether a request was acknowledged is read
back after the app's graceful stop, which requeues anything left unacknowledged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.backends.amqp.rpc.conftest import MUST_HAPPEN, Broker, serving
from trioworker import App, Message, open_app
from trioworker.amqp import RPC_ERROR_HEADER, BasicProperties, Channel, Delivery

pytestmark = pytest.mark.broker


async def reply_queue(broker: Broker) -> tuple[Channel, str]:
    """An exclusive, server-named reply queue on its own channel (as most clients do)."""
    channel = await broker.conn.open_channel()
    declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
    assert declared.queue
    return channel, declared.queue


async def next_reply(channel: Channel, queue: str) -> Delivery:
    with trio.fail_after(MUST_HAPPEN):
        while (delivery := await channel.basic_get(queue, no_ack=True)) is None:  # noqa: ASYNC110
            await trio.sleep(0.02)
    return delivery


async def test_reply_goes_to_reply_to_with_the_same_correlation_id(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def add(message: Message) -> dict[str, int]:
        return {"sum": sum(message.json())}

    channel, replies = await reply_queue(broker)
    async with open_app(app):
        await serving(app)
        await broker.publish(
            queue,
            b"[1, 2, 39]",
            properties=BasicProperties(
                reply_to=replies, correlation_id="req-42", content_type="application/json"
            ),
        )
        reply = await next_reply(channel, replies)
    assert json.loads(reply.body) == {"sum": 42}
    assert reply.properties.correlation_id == "req-42"
    assert reply.properties.content_type == "application/json"
    assert reply.exchange == ""  # the default exchange
    assert reply.routing_key == replies
    assert not (reply.properties.headers or {}).get(RPC_ERROR_HEADER)
    assert await broker.ready(queue) == 0  # acknowledged: not requeued by the stop


async def test_request_without_reply_to_is_handled_acked_and_its_result_dropped(
    make_app: Callable[..., App], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker.amqp")
    queue = broker.name("rpc")
    app = make_app()
    handled = trio.Event()
    calls = 0

    @app.amqp.rpc(queue)
    async def work(message: Message) -> str:
        nonlocal calls
        calls += 1
        handled.set()
        return "nobody listens"

    async with open_app(app):
        await serving(app)
        await broker.publish(queue, b"{}", properties=BasicProperties(correlation_id="c1"))
        with trio.fail_after(MUST_HAPPEN):
            await handled.wait()
        await trio.sleep(0.3)
    assert calls == 1
    assert await broker.ready(queue) == 0
    assert any(
        "no reply_to: result dropped" in r.getMessage() and r.levelno >= logging.INFO
        for r in caplog.records
    )


async def test_handler_exception_replies_with_an_error_envelope_and_acks(
    make_app: Callable[..., App], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    queue = broker.name("rpc")
    app = make_app()
    calls = 0

    @app.amqp.rpc(queue)
    async def divide(message: Message) -> float:
        nonlocal calls
        calls += 1
        a, b = message.json()
        return a / b  # type: ignore[no-any-return]

    channel, replies = await reply_queue(broker)
    async with open_app(app):
        await serving(app)
        await broker.publish(
            queue, b"[1, 0]", properties=BasicProperties(reply_to=replies, correlation_id="d1")
        )
        reply = await next_reply(channel, replies)
        await trio.sleep(0.5)  # a requeued request would be handled again meanwhile
        assert calls == 1
    body = json.loads(reply.body)
    assert body == {"error": {"type": "ZeroDivisionError", "message": "division by zero"}}
    assert reply.properties.headers == {RPC_ERROR_HEADER: True}
    assert reply.properties.correlation_id == "d1"
    assert b"Traceback" not in reply.body and b".py" not in reply.body
    assert calls == 1
    assert await broker.ready(queue) == 0  # acknowledged, not requeued
    # the worker's own log keeps the traceback
    assert any(r.exc_info and "raised" in r.getMessage() for r in caplog.records)


async def test_handler_timeout_replies_with_a_timeout_error(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue, timeout=0.2)
    async def slow(message: Message) -> str:
        await trio.sleep(30)
        return "late"

    channel, replies = await reply_queue(broker)
    async with open_app(app):
        await serving(app)
        await broker.publish(
            queue, b"{}", properties=BasicProperties(reply_to=replies, correlation_id="t1")
        )
        reply = await next_reply(channel, replies)
    assert json.loads(reply.body)["error"]["type"] == "TimeoutError"
    assert reply.properties.headers == {RPC_ERROR_HEADER: True}
    assert await broker.ready(queue) == 0


async def test_requests_are_handled_concurrently_by_default(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()
    running = 0
    most = 0

    @app.amqp.rpc(queue)
    async def slow(message: Message) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(1.0)
        running -= 1
        return message.json()

    async with open_app(app):
        await serving(app)
        results: dict[int, Any] = {}

        async def call(i: int) -> None:
            results[i] = await app.amqp.call(queue, {"i": i}, timeout=MUST_HAPPEN)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(call, i)
        elapsed = trio.current_time() - start
    assert results == {i: {"i": i} for i in range(20)}
    assert most == 20
    assert elapsed < 10  # one after the other would take 20 s


async def test_concurrency_bounds_the_handler_calls_running_at_once(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()
    running = 0
    most = 0

    @app.amqp.rpc(queue, concurrency=3)
    async def slow(message: Message) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.2)
        running -= 1
        return message.json()

    async with open_app(app):
        await serving(app)
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(app.amqp.call, queue, i)
    assert most == 3


async def test_a_slow_request_does_not_hold_back_the_others(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()
    release = trio.Event()

    @app.amqp.rpc(queue)
    async def handler(message: Message) -> Any:
        if message.json() == "slow":
            await release.wait()
        return message.json()

    async with open_app(app):
        await serving(app)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.amqp.call, queue, "slow")
            await trio.sleep(0.2)
            with trio.fail_after(5):
                for i in range(5):
                    assert await app.amqp.call(queue, i) == i
            release.set()
