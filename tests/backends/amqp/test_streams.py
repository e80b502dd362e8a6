"""Routes on RabbitMQ streams: where they start, resuming after a reconnect, and decisions
that never reach the broker as a nack (RabbitMQ closes the connection for one)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio

from tests.support.broker import MUST_HAPPEN, Broker
from tests.support.proxy import open_tcp_proxy
from trioworker import Actions, App, Message, Queue, Retry, open_app
from trioworker.testing import make_message

pytestmark = pytest.mark.broker


async def stream(broker: Broker, prefix: str = "stream") -> Queue:
    """A new stream, deleted at teardown."""
    name = broker.name(prefix)
    channel = await broker.channel()
    await channel.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    return Queue(name, kind="stream")


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while not predicate():  # noqa: ASYNC110 - polling what the handlers recorded
            await trio.sleep(0.02)


def numbered(count: int, start: int = 0) -> list[bytes]:
    return [b"%d" % i for i in range(start, start + count)]


async def test_a_route_starts_where_it_is_told(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    events = await stream(broker)
    await broker.publish(events.name, *numbered(30))
    app = make_app()
    everything: list[tuple[int | None, bytes]] = []
    from_20: list[int | None] = []

    @app.amqp.consume(events, bulk_size=10, flush_interval=0.05, stream_offset="first")
    async def replay(messages: list[Message]) -> None:
        everything.extend((m.stream_offset, m.body) for m in messages)

    @app.amqp.consume(events, bulk_size=10, flush_interval=0.05, stream_offset=20)
    async def tail(messages: list[Message]) -> None:
        from_20.extend(m.stream_offset for m in messages)

    async with open_app(app):
        await wait_for(lambda: len(everything) >= 30 and len(from_20) >= 10, "every message")
        await trio.sleep(0.3)  # nothing more comes
    assert everything == [(i, b"%d" % i) for i in range(30)]
    assert from_20 == list(range(20, 30))


async def test_a_reconnect_resumes_after_the_last_message_handled(
    broker: Broker, make_app: Callable[..., App], broker_host_port: tuple[str, int]
) -> None:
    events = await stream(broker)
    await broker.publish(events.name, *numbered(20))
    handled: list[int | None] = []
    async with open_tcp_proxy(*broker_host_port) as proxy:
        app = make_app(amqp_url=proxy.amqp_url())

        @app.amqp.consume(events, bulk_size=5, flush_interval=0.05, stream_offset="first")
        async def handle(messages: list[Message]) -> None:
            handled.extend(m.stream_offset for m in messages)

        async with open_app(app):
            await wait_for(lambda: len(handled) >= 20, "the first 20")
            await trio.sleep(0.2)  # the last bulk's decisions are taken: nothing in flight
            proxy.refuse_new = True
            await proxy.cut()
            await broker.publish(events.name, *numbered(20, start=20))  # while it is away
            await trio.sleep(0.5)
            proxy.refuse_new = False
            await wait_for(lambda: len(handled) >= 40, "the 20 published meanwhile")
            await trio.sleep(0.3)
    # Not from "next" (the 20 would be lost), not from "first" again (20 handled twice).
    assert handled == list(range(40))


async def test_a_failing_bulk_is_read_again_without_closing_the_connection(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    events = await stream(broker)
    await broker.publish(events.name, *numbered(20))
    other = await broker.queue("other")
    app = make_app()
    seen: list[int | None] = []
    failed: list[int | None] = []
    other_handled: list[bytes] = []

    @app.amqp.consume(events, bulk_size=5, flush_interval=0.05, stream_offset="first")
    async def handle(messages: list[Message]) -> None:
        offsets = [m.stream_offset for m in messages]
        seen.extend(offsets)
        if 7 in offsets and not failed:
            failed.extend(offsets)
            raise RuntimeError("the database is down")  # on_exception=REQUEUE: read again
        for m in messages:
            if m.stream_offset == 12:
                m.reject(requeue=False)  # skipped: never read again

    @app.amqp.consume(other)
    async def on_other(messages: list[Message]) -> None:
        other_handled.extend(m.body for m in messages)

    async with open_app(app):
        await wait_for(lambda: set(range(20)) <= set(seen), "every offset")
        await trio.sleep(0.5)
        await broker.publish(other, b"still connected")
        await wait_for(lambda: other_handled == [b"still connected"], "the other route")
        assert app.amqp.health().ok, app.amqp.health()
    assert failed and 7 in failed
    assert [o for o in seen if o in failed] == failed + failed  # that bulk twice, in order
    assert seen.count(12) == 1  # rejected without requeue: skipped, not read again
    assert all(seen.count(o) == 1 for o in range(20) if o not in failed)
    assert not [r for r in caplog.records if "NOT_IMPLEMENTED" in r.getMessage()]


async def test_a_plain_named_stream_is_warned_about(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    events = await stream(broker)
    await broker.publish(events.name, b"x")
    app = make_app()
    got: list[bytes] = []

    @app.amqp.consume(events.name)  # a name: nothing says it is a stream
    async def handle(messages: list[Message]) -> None:
        got.extend(m.body for m in messages)

    caplog.set_level(logging.WARNING, logger="trioworker.amqp")
    async with open_app(app):
        await broker.publish(events.name, b"y")  # "next": the one published after it started
        await wait_for(lambda: got == [b"y"], "the message")
    warnings = [
        r.getMessage() for r in caplog.records if "delivers from a stream" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "kind='stream'" in warnings[0]


def test_what_a_stream_route_cannot_do_is_refused_at_registration(amqp_url: str) -> None:
    app = App(amqp_url, name="tw-test-streams")
    events = Queue("tw-test-events", kind="stream")

    async def handle(messages: list[Message]) -> None: ...

    with pytest.raises(ValueError, match="retry= does not work on a stream"):
        app.amqp.consume(events, retry=Retry(3, (1.0,)))(handle)
    with pytest.raises(ValueError, match="stream_offset= is for streams"):
        app.amqp.consume("tw-test-plain", stream_offset="first")(handle)
    for bad in (-1, "yesterday", "10x", True, 1.5):
        with pytest.raises(ValueError, match="stream_offset="):
            app.amqp.consume(events, stream_offset=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a timezone"):
        import datetime

        app.amqp.consume(events, stream_offset=datetime.datetime(2026, 1, 1))
    app.amqp.consume(events, stream_offset="7D", on_exception=Actions.ACK)(handle)  # fine


def test_stream_offset_of_a_message() -> None:
    assert make_message(b"x", headers={"x-stream-offset": 41}).stream_offset == 41
    assert make_message(b"x").stream_offset is None


async def test_a_route_declares_its_stream(broker: Broker, make_app: Callable[..., App]) -> None:
    events = Queue(broker.name("declared"), kind="stream", arguments={"x-max-age": "7D"})
    app = make_app()
    got: list[int | None] = []

    @app.amqp.consume(events, declare=True, stream_offset="first")
    async def handle(messages: list[Message]) -> None:
        got.extend(m.stream_offset for m in messages)

    async with open_app(app):
        await broker.publish(events.name, b"a", b"b")
        await wait_for(lambda: got == [0, 1], "both")


async def test_a_test_client_on_rabbitmq_drains_an_app_reading_a_stream(
    broker: Broker, amqp_url: str, make_app: Callable[..., App]
) -> None:
    from trioworker.testing import TestClient

    events = await stream(broker)
    app = make_app()
    got: list[bytes] = []

    @app.amqp.consume(events, stream_offset="first")
    async def handle(messages: list[Message]) -> None:
        got.extend(m.body for m in messages)

    async with TestClient(app, broker=amqp_url, drain_timeout=20) as client:
        await client.publish(b"one", routing_key=events.name)
        await wait_for(lambda: got == [b"one"], "the message")
        # The stream keeps its message, yet RabbitMQ counts none ready: drain ends.
        await client.drain()
