"""Topology owned by routes (docs/amqp.md "Topology"): ``declare=True`` declares exchanges,
queues, bindings and the dead-letter queue on every (re)connect; without it a passive check
names what is missing; a 406 *inequivalent arg* is a clear StartupError, not a retry loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from tests.support import rabbitmqctl
from tests.support.broker import MUST_HAPPEN, Broker
from trioworker import App, Binding, Exchange, Message, Queue, StartupError, open_app
from trioworker.amqp import Channel, NotFoundError, PreconditionFailedError
from trioworker.backends.amqp import _route_run

pytestmark = pytest.mark.broker


@pytest.fixture
def declares(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every queue a route declares or checks, in order (to prove there is no retry loop)."""
    calls: list[str] = []
    real = _route_run.prepare_queue

    async def counting(channel: Channel, queue: Queue | str, vhost: str, declare: bool) -> None:
        calls.append(queue.name if isinstance(queue, Queue) else queue)
        await real(channel, queue, vhost, declare)

    monkeypatch.setattr(_route_run, "prepare_queue", counting)
    return calls


@contextlib.asynccontextmanager
async def exchange_cleanup(broker: Broker, *names: str) -> AsyncIterator[None]:
    try:
        yield
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            channel = await broker.conn.open_channel()
            for name in names:
                await channel.exchange_delete(name)


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while not predicate():  # noqa: ASYNC110 - polling
            await trio.sleep(0.02)


async def test_declare_sets_up_exchange_bindings_and_dead_letter_queue(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    exchange = Exchange(broker.name("x"), type="topic")
    dlq = broker.name("dlq")
    orders = Queue(
        broker.name("orders"),
        bindings=[Binding(exchange, "order.*")],
        dead_letter=dlq,
        arguments={"x-max-length": 1000},
    )
    app = make_app()
    got: list[bytes] = []

    @app.amqp.consume([orders], declare=True)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            got.append(m.body)
            m.reject(requeue=False)

    async with exchange_cleanup(broker, exchange.name), open_app(app):
        # The exchange is a topic exchange: a routing key the pattern matches gets through.
        channel = await broker.conn.open_channel()
        await channel.exchange_declare(exchange.name, "topic", passive=True)
        with pytest.raises(PreconditionFailedError):  # declared as topic, not direct
            await (await broker.conn.open_channel()).exchange_declare(
                exchange.name, "direct", durable=True
            )
        await channel.confirm_select()
        confirmation = await channel.publish(b"o1", exchange=exchange.name, routing_key="order.new")
        await confirmation.wait()
        await wait_until(lambda: got == [b"o1"])
        # reject(requeue=False) dead-letters it into the declared DLQ.
        await broker.wait_ready(dlq, 1)
    assert [d.body for d in await broker.drain(dlq)] == [b"o1"]


async def test_quorum_queue_gets_at_least_once_dead_lettering(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    dlq = broker.name("dlq")
    queue = Queue(broker.name("qq"), kind="quorum", dead_letter=dlq)
    app = make_app()

    @app.amqp.consume(queue, declare=True)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            m.reject(requeue=False)

    async with open_app(app):
        await broker.publish(queue.name, b"q1")
        await broker.wait_ready(dlq, 1)
    listing = await trio.to_thread.run_sync(
        rabbitmqctl.run, "list_queues", "-q", "--formatter", "json", "name", "type", "arguments"
    )
    entry = next(q for q in json.loads(listing) if q["name"] == queue.name)
    assert entry["type"] == "quorum"
    raw = entry["arguments"]  # [[name, type, value], ...] (or a mapping)
    arguments = dict(raw) if isinstance(raw, dict) else {a[0]: a[-1] for a in raw}
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"
    assert arguments["x-dead-letter-routing-key"] == dlq


async def test_redeclare_on_reconnect_is_idempotent(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue(broker.name("q"), kind="quorum", dead_letter=broker.name("dlq"))
    app = make_app()
    got: list[bytes] = []

    @app.amqp.consume([queue], declare=True)
    async def handle(messages: list[Message]) -> None:
        got.extend(m.body for m in messages)

    async with open_app(app):
        sup = next(iter(app.amqp.supervisors))
        await rabbitmqctl.close_connection_by_name_async(f"{app.name}:default")
        await wait_until(lambda: sup.reconnects >= 1 and sup.up)
        await broker.publish(queue.name, b"after")
        await wait_until(lambda: got == [b"after"])
        assert app.health()["amqp"].ok, app.health()["amqp"]
    assert "PRECONDITION_FAILED" not in caplog.text


async def test_without_declare_a_missing_queue_is_named_and_logged_once(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    name = broker.name("missing")
    app = make_app()

    @app.amqp.consume([Queue(name, kind="quorum")])
    async def handle(messages: list[Message]) -> None: ...

    caplog.set_level(logging.DEBUG, "trioworker.amqp")
    async with open_app(app):
        await trio.sleep(2.0)  # several retries (0.1, 0.2, 0.4, 0.8 s ...)
        health = app.health()["amqp"]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and name in r.message]
        assert len(errors) == 1, [r.message for r in errors]
        text = errors[0].getMessage()
        assert f"queue {name!r} does not exist in vhost '/'" in text
        assert "declare=True" in text and "create it" in text
        assert not health.ok and name in health.detail
        assert not await broker.exists(name)  # a passive check creates nothing
        # Created meanwhile: the route starts consuming.
        await broker.declare(name, durable=True)
        await wait_until(lambda: app.health()["amqp"].ok)


async def test_inequivalent_arguments_are_a_startup_error_naming_the_argument(
    broker: Broker,
    make_app: Callable[..., App],
    caplog: pytest.LogCaptureFixture,
    declares: list[str],
) -> None:
    name = await broker.queue("classic", durable=True)  # exists as a classic queue
    app = make_app()

    @app.amqp.consume([Queue(name, kind="quorum")], declare=True)
    async def handle(messages: list[Message]) -> None: ...

    with trio.fail_after(MUST_HAPPEN), pytest.raises(StartupError) as caught:
        async with open_app(app):
            pytest.fail("the app must not start")
    text = str(caught.value)
    assert "'x-queue-type'" in text and repr(name) in text
    assert "delete" in text and "cannot change in place" in text
    logged = [r for r in caplog.records if "x-queue-type" in r.getMessage()]
    assert len(logged) == 1, "logged once: no retry loop"
    assert declares == [name], "declared once"
    assert await broker.exists(name)


async def test_inequivalent_arguments_after_a_reconnect_show_in_health_without_a_loop(
    broker: Broker,
    make_app: Callable[..., App],
    caplog: pytest.LogCaptureFixture,
    declares: list[str],
) -> None:
    name = broker.name("q")
    app = make_app()

    @app.amqp.consume([Queue(name, arguments={"x-max-length": 10})], declare=True)
    async def handle(messages: list[Message]) -> None: ...

    async with open_app(app):
        sup = next(iter(app.amqp.supervisors))
        # Someone recreates the queue with other arguments while we are disconnected.
        channel = await broker.channel()
        await channel.queue_delete(name)
        await broker.declare(name, durable=True)
        await rabbitmqctl.close_connection_by_name_async(f"{app.name}:default")
        await wait_until(lambda: sup.reconnects >= 1 and sup.up)
        await wait_until(lambda: not app.health()["amqp"].ok)
        await trio.sleep(1.5)  # a retry loop would log again within this
        detail = app.health()["amqp"].detail
    assert "'x-max-length'" in detail
    assert declares == [name, name], "once per connection, not retried on the second"
    logged = [r for r in caplog.records if "'x-max-length'" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]


async def test_a_name_without_declare_assumes_nothing(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    name = await broker.queue("q", durable=True)
    channel = await broker.channel()
    await channel.queue_delete(name)
    await channel.queue_declare(name, durable=True, arguments={"x-max-length": 5})
    app = make_app()
    got: list[bytes] = []

    @app.amqp.consume(name)  # a name: its arguments are whatever the queue has
    async def handle(messages: list[Message]) -> None:
        got.extend(m.body for m in messages)

    async with open_app(app):
        await broker.publish(name, b"x")
        await wait_until(lambda: got == [b"x"])
    assert app.amqp.routes[0].topology == {}
    with pytest.raises(NotFoundError):
        await (await broker.conn.open_channel()).queue_declare(broker.name("nope"), passive=True)
