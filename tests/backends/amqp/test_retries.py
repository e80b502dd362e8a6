"""Retries against the real RabbitMQ: attempts, delays, dead-lettering, per-message
decisions, the confirm-before-ack rule across a cut connection, and no hot loop without
``retry=`` (docs/retries.md).

Every queue a test makes — its own, the delay queues ``<queue>.retry.<ms>`` and the
dead-letter queue ``<queue>.dlq`` the route declares — is registered with the ``broker``
fixture, which deletes them at teardown.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.metrics._scrape import scrape, value
from tests.support.broker import MUST_HAPPEN, Broker, eventually
from tests.support.proxy import open_tcp_proxy
from trioworker import Actions, App, Message, Retry, open_app
from trioworker.amqp import Delivery

pytestmark = pytest.mark.broker

BASIC_PUBLISH = b"\x00\x3c\x00\x28"  # class 60, method 40: the start of its frame payload


class Handled:
    """Every handling: (body, attempt, redelivered, trio time), with a way to wait."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, int, bool, float]] = []
        self.bulks = 0
        self._changed = trio.Event()

    def add(self, messages: list[Message]) -> None:
        self.bulks += 1
        now = trio.current_time()
        self.calls.extend((m.body, m.attempt, m.redelivered, now) for m in messages)
        self._changed.set()
        self._changed = trio.Event()

    def of(self, body: bytes) -> list[tuple[bytes, int, bool, float]]:
        return [c for c in self.calls if c[0] == body]

    async def wait_for(self, predicate: Callable[[], bool], within: float = MUST_HAPPEN) -> None:
        with trio.fail_after(within):
            while not predicate():
                await self._changed.wait()


def retry_queues(broker: Broker, queue: str, *delays: float) -> str:
    """Register the delay queues and the DLQ the route declares for ``queue``; return the
    DLQ's name."""
    for delay in delays:
        broker.queues.append(f"{queue}.retry.{round(delay * 1000)}")
    broker.queues.append(f"{queue}.dlq")
    return f"{queue}.dlq"


def headers(delivery: Delivery) -> dict[str, Any]:
    return dict(delivery.properties.headers or {})


def stats(app: App, queue: str) -> Any:
    (route,) = app.amqp.routes
    return route.stats.queue(queue)


# ----------------------------------------------------------------- registration


def test_retry_options_are_checked_at_registration(make_app: Callable[..., App]) -> None:
    app = make_app()

    async def handle(messages: list[Message]) -> None: ...

    with pytest.raises(ValueError, match="needs retry="):
        app.amqp.consume("q", on_exception=Actions.RETRY)(handle)
    with pytest.raises(ValueError, match="needs retry="):
        app.amqp.consume("q", on_exhausted=lambda m, e: None)(handle)
    with pytest.raises(TypeError):
        app.amqp.consume("q", retry=3)(handle)  # type: ignore[arg-type]
    app.amqp.consume("q", retry=Retry())(handle)
    app.amqp.consume("q2")(handle)
    with_retry, without = app.amqp.routes
    assert with_retry.on_exception is Actions.RETRY  # the default with retry=
    assert without.on_exception is Actions.REQUEUE  # v0 stays


# ------------------------------------------------------------------- attempts


async def test_attempts_are_counted_then_the_message_is_dead_lettered_with_headers(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.2)
    await broker.publish(queue, b"m")
    handled = Handled()
    exhausted: list[tuple[list[bytes], BaseException | None]] = []
    app = make_app()

    async def on_exhausted(messages: list[Message], error: BaseException | None) -> None:
        exhausted.append(([m.body for m in messages], error))

    @app.amqp.consume(queue, retry=Retry(attempts=3, delays=(0.2,)), on_exhausted=on_exhausted)
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        raise ValueError("boom " + "x" * 5000)

    async with open_app(app):
        await broker.wait_ready(dlq, 1)
        await trio.sleep(0.5)  # nothing more comes
        samples = scrape(app)
    assert [(b, a) for b, a, _, _ in handled.calls] == [(b"m", 1), (b"m", 2), (b"m", 3)]
    (dead,) = await broker.drain(dlq)
    assert dead.body == b"m"
    h = headers(dead)
    assert h["x-trioworker-reason"] == "exhausted"
    assert h["x-trioworker-attempts"] == 3
    assert h["x-trioworker-exception"] == "ValueError"
    message = h["x-trioworker-exception-message"]
    assert message.startswith("boom xxx") and len(message.encode()) <= 1024
    assert h["x-trioworker-original-queue"] == queue
    assert h["x-trioworker-original-exchange"] == ""
    assert h["x-trioworker-original-routing-key"] == queue
    assert isinstance(h["x-trioworker-first-failure"], int)
    assert dead.properties.delivery_mode == 2
    assert await broker.ready(queue) == 0
    assert await broker.ready(f"{queue}.retry.200") == 0
    # on_exhausted got the message and the error, once.
    assert len(exhausted) == 1
    assert exhausted[0][0] == [b"m"]
    assert isinstance(exhausted[0][1], ValueError)
    # Metrics, per route and queue.
    labels = {"route": "handle", "queue": queue, "connection": "default"}
    assert value(samples, "trioworker_amqp_messages_retried_total", **labels) == 2
    assert value(samples, "trioworker_amqp_messages_dead_lettered_total", **labels) == 1
    assert value(samples, "trioworker_amqp_messages_exhausted_total", **labels) == 1
    assert value(samples, "trioworker_amqp_messages_acked_total", **labels) == 0
    assert value(samples, "trioworker_amqp_messages_requeued_total", **labels) == 0


async def test_delays_are_honoured_and_the_last_one_repeats(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 1.0, 0.3)
    await broker.publish(queue, b"m")
    handled = Handled()
    app = make_app()

    @app.amqp.consume(queue, retry=Retry(attempts=4, delays=(1.0, 0.3), jitter=0))
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        raise RuntimeError("again")

    async with open_app(app):
        await broker.wait_ready(dlq, 1)
    times = [t for _, _, _, t in handled.calls]
    assert [a for _, a, _, _ in handled.calls] == [1, 2, 3, 4]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.9 <= gaps[0] < 5, gaps  # delays[0] = 1 s
    assert 0.25 <= gaps[1] < 0.9, gaps  # delays[1] = 0.3 s
    assert 0.25 <= gaps[2] < 0.9, gaps  # the last delay repeats


async def test_jitter_spreads_delays_within_bounds(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.5)
    bodies = [b"%d" % i for i in range(20)]
    await broker.publish(queue, *bodies)
    handled = Handled()
    app = make_app()

    drawn: dict[bytes, float] = {}  # the expiration each copy was given, in seconds

    @app.amqp.consume(queue, retry=Retry(2, (0.5,), jitter=1))
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        for m in messages:
            # RabbitMQ moves a dead-lettered copy's expiration into its x-death entry.
            for death in m.headers.get("x-death", []):
                if death.get("reason") == "expired":
                    drawn[m.body] = int(death["original-expiration"]) / 1000
        raise RuntimeError("again")

    async with open_app(app):
        await broker.wait_ready(dlq, 20)
    first = {b: t for b, a, _, t in handled.calls if a == 1}
    second = {b: t for b, a, _, t in handled.calls if a == 2}
    gaps = [second[b] - first[b] for b in bodies]
    assert all(0.45 <= g < 1.0 + 0.5 for g in gaps), gaps  # within [d, d * (1 + jitter)]
    assert sorted(drawn) == sorted(bodies), drawn
    assert all(0.5 <= e <= 1.0 for e in drawn.values()), drawn  # drawn from [d, d * (1 + j)]
    # Spread, not all the same delay. The gaps themselves need not spread: RabbitMQ expires
    # only at the head of the delay queue, so copies behind a head that drew a long delay
    # leave with it (why the queue's TTL bounds every wait); the drawn values must.
    assert max(drawn.values()) - min(drawn.values()) > 0.05, drawn
    assert all(g >= drawn[b] - 0.05 for b, g in zip(bodies, gaps, strict=True)), (gaps, drawn)


async def test_an_exception_in_never_is_dead_lettered_at_once(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.1)
    await broker.publish(queue, b"bad")
    handled = Handled()
    exhausted: list[Any] = []
    app = make_app()

    def on_exhausted(messages: list[Message], error: BaseException | None) -> None:  # sync
        exhausted.append(([m.body for m in messages], type(error)))
        raise OSError("the hook fails: logged, the message is dead-lettered anyway")

    retry = Retry(attempts=5, delays=(0.1,), never=(KeyError,))

    @app.amqp.consume(queue, retry=retry, on_exhausted=on_exhausted)
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        raise KeyError("missing")

    async with open_app(app):
        await broker.wait_ready(dlq, 1)
    assert len(handled.calls) == 1
    (dead,) = await broker.drain(dlq)
    assert headers(dead)["x-trioworker-reason"] == "never"
    assert headers(dead)["x-trioworker-exception"] == "KeyError"
    assert headers(dead)["x-trioworker-attempts"] == 1
    assert exhausted == [([b"bad"], KeyError)]


async def test_an_exception_not_in_on_gets_the_v0_requeue(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.1)
    await broker.publish(queue, b"m")
    handled = Handled()
    app = make_app()

    @app.amqp.consume(queue, retry=Retry(attempts=2, delays=(0.1,), on=(KeyError,)))
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        raise ValueError("not a KeyError")

    async with open_app(app):
        await handled.wait_for(lambda: len(handled.calls) >= 3)
    # Requeued (redelivered, same attempt), never retried or dead-lettered.
    assert all(a == 1 for _, a, _, _ in handled.calls)
    assert all(r for _, _, r, _ in handled.calls[1:])
    assert await broker.ready(dlq) == 0
    assert await broker.ready(f"{queue}.retry.100") == 0
    assert await broker.ready(queue) == 1


# ------------------------------------------------------- per-message decisions


async def test_per_message_decisions_in_a_bulk(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.2, 0.8)
    await broker.publish(queue, b"ok", b"retry", b"later", b"dead")
    handled = Handled()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=4, flush_interval=0.5, retry=Retry(3, (0.2,), jitter=0))
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        for m in messages:
            if m.attempt > 1:
                continue  # the default: ACK
            if m.body == b"retry":
                m.retry()
            elif m.body == b"later":
                m.retry(delay=0.8)  # its own delay queue, declared on first use
            elif m.body == b"dead":
                m.reject(requeue=False)  # dead-lettered by the route, at once

    async with open_app(app):
        await handled.wait_for(lambda: len(handled.calls) >= 6)
        await broker.wait_ready(dlq, 1)
        counters = stats(app, queue)
        assert (counters.acked, counters.retried, counters.dead_lettered) == (3, 2, 1)
        assert counters.exhausted == 0
    assert [c[0] for c in handled.calls[:4]] == [b"ok", b"retry", b"later", b"dead"]
    (retry,) = [c for c in handled.of(b"retry") if c[1] == 2]
    (later,) = [c for c in handled.of(b"later") if c[1] == 2]
    start = handled.calls[0][3]
    assert 0.15 <= retry[3] - start < 0.75
    assert 0.75 <= later[3] - start < 5
    assert len(handled.of(b"ok")) == 1
    assert len(handled.of(b"dead")) == 1
    (dead,) = await broker.drain(dlq)
    assert dead.body == b"dead"
    assert headers(dead)["x-trioworker-reason"] == "rejected"
    assert await broker.ready(queue) == 0


async def test_a_per_message_decision_beats_the_retry_default_of_a_failed_bulk(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.1)
    await broker.publish(queue, b"keep", b"again")
    handled = Handled()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=2, flush_interval=0.5, retry=Retry(2, (0.1,)))
    async def handle(messages: list[Message]) -> None:
        handled.add(messages)
        for m in messages:
            if m.body == b"keep":
                m.accept()
        if any(m.attempt == 1 for m in messages):
            raise RuntimeError("the bulk fails")

    async with open_app(app):
        await handled.wait_for(lambda: len(handled.of(b"again")) == 2)
        await trio.sleep(0.3)
    assert len(handled.of(b"keep")) == 1  # accepted: not retried
    assert [c[1] for c in handled.of(b"again")] == [1, 2]
    assert await broker.ready(dlq) == 0
    assert await broker.ready(queue) == 0


async def test_retry_on_a_route_without_retry_raises(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"m")
    errors: list[BaseException] = []
    done = trio.Event()
    app = make_app()

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        try:
            messages[0].retry()
        except RuntimeError as exc:
            errors.append(exc)
        done.set()

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await done.wait()
    assert "retry=" in str(errors[0])


# ------------------------------------------------- confirm before ack, cut


async def test_a_cut_between_republish_and_confirm_loses_nothing(
    make_app: Callable[..., App], broker: Broker, broker_host_port: tuple[str, int]
) -> None:
    queue = await broker.queue()
    dlq = retry_queues(broker, queue, 0.3)
    bodies = [b"m%d" % i for i in range(5)]
    await broker.publish(queue, *bodies)
    handled = Handled()
    completed: list[bytes] = []

    async with open_tcp_proxy(*broker_host_port) as proxy:
        republished = trio.Event()
        marker = f"{queue}.retry.300".encode()

        def watch(chunk: bytes) -> bytes:
            if BASIC_PUBLISH in chunk and marker in chunk and not republished.is_set():
                # The republish goes through; nothing comes back (no confirm) until the cut.
                proxy.transform_downstream = lambda _: b""
                republished.set()
            return chunk

        proxy.transform_upstream = watch
        app = make_app(amqp_url=proxy.amqp_url())

        @app.amqp.consume(queue, retry=Retry(attempts=3, delays=(0.3,)))
        async def handle(messages: list[Message]) -> None:
            handled.add(messages)
            for m in messages:
                if m.attempt == 1:
                    raise RuntimeError("fails once")
                completed.append(m.body)

        async with open_app(app):
            with trio.fail_after(MUST_HAPPEN):
                await republished.wait()
            await trio.sleep(0.2)  # the copy reaches the broker; its confirm is swallowed
            proxy.transform_upstream = None
            proxy.transform_downstream = None
            await proxy.cut()
            await handled.wait_for(lambda: set(completed) == set(bodies), within=30)
            await trio.sleep(1.0)  # a duplicate copy (the cut one) may still come back
    assert set(completed) == set(bodies)  # none lost
    # The message whose copy was not confirmed was not acked: the broker redelivered it.
    first = handled.calls[0][0]
    assert any(b == first and a == 1 and r for b, a, r, _ in handled.calls)
    assert await broker.ready(dlq) == 0
    await eventually(lambda: broker.ready(queue), lambda n: n == 0, MUST_HAPPEN)


# -------------------------------------------------------------- no hot loop


async def test_a_handler_that_always_fails_does_not_hot_loop_without_retry(
    make_app: Callable[..., App], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await broker.queue()
    other = await broker.queue()
    await broker.publish(queue, b"a", b"b", b"c")
    calls = 0
    other_handled = Handled()
    app = make_app()

    @app.amqp.consume(queue)  # v0 default: REQUEUE on exception
    async def failing(messages: list[Message]) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("always")

    @app.amqp.consume(other)
    async def fine(messages: list[Message]) -> None:
        other_handled.add(messages)

    caplog.set_level(logging.INFO, logger="trioworker")
    async with open_app(app):
        await trio.sleep(6)
        # The failing route's backoff does not delay another route.
        started = trio.current_time()
        await broker.publish(other, b"x")
        await other_handled.wait_for(lambda: len(other_handled.calls) == 1, within=2)
        assert trio.current_time() - started < 1.5
        await trio.sleep(4)
    assert 3 <= calls <= 36, calls
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) <= 8, [r.getMessage() for r in lines]
    assert sum(r.exc_info is not None for r in lines) == 1  # one traceback, then summaries
    assert any("failures in the last" in r.getMessage() for r in lines)
    assert await broker.ready(queue) == 3  # still there
