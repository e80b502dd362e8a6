"""Timers in a whole app against the real RabbitMQ, in real time (``open_app``).

The handlers publish with ``app.amqp.publish`` and the messages are counted in their queue
through a separate connection (the framework's ``broker`` fixture). Bounds are generous: the
exact schedule is proven on the MockClock in test_schedule.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio

from tests.support.broker import MUST_HAPPEN, Broker, eventually
from trioworker import App, open_app

pytestmark = pytest.mark.broker


async def test_a_timer_publishes_and_the_messages_arrive(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await broker.queue("ticks")
    app = make_app()

    @app.every(0.2)
    async def publish_tick(app: App) -> None:
        await app.amqp.publish({"tick": trio.current_time()}, routing_key=queue)

    timer = app.timers.get("publish_tick")
    assert timer is not None
    with trio.fail_after(30):  # startup, the test, and the whole shutdown
        async with open_app(app):
            assert app.health()["timers"].ok
            await eventually(lambda: broker.ready(queue), lambda n: n >= 3)
    ready = await broker.ready(queue)
    assert ready == timer.runs >= 3  # every run published, nothing more
    assert timer.failures == 0


async def test_run_at_startup_runs_once_the_app_is_up(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await broker.queue("startup")
    app = make_app()

    @app.every(3600, run_at_startup=True)
    async def hello(app: App) -> None:
        await app.amqp.publish(b"hello", routing_key=queue)

    with trio.fail_after(30):  # startup, the test, and the whole shutdown
        async with open_app(app):
            await broker.wait_ready(queue, 1)
    assert [d.body for d in await broker.drain(queue)] == [b"hello"]


async def test_a_timer_registered_on_a_running_app_starts_at_once(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await broker.queue("late")
    with trio.fail_after(30):  # startup, the test, and the whole shutdown
        async with open_app(make_app()) as app:
            assert "timers" not in app.health()  # no timer yet: the backend is not running

            @app.every(0.2, run_at_startup=True, name="late")
            async def late(app: App) -> None:
                await app.amqp.publish(b"late", routing_key=queue)

            await eventually(lambda: broker.ready(queue), lambda n: n >= 2)
            assert app.health()["timers"].ok

            @app.every(3600, run_at_startup=True, name="second")
            async def second(app: App) -> None:
                await app.amqp.publish(b"second", routing_key=queue)

            await eventually(
                lambda: broker.drain(queue), lambda ds: any(d.body == b"second" for d in ds)
            )


async def test_shutdown_waits_for_a_running_tick(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await broker.queue("drain")
    app = make_app(grace_period=10.0)
    started = trio.Event()

    @app.every(3600, run_at_startup=True, name="slow")
    async def slow(app: App) -> None:
        started.set()
        await trio.sleep(1.0)
        await app.amqp.publish(b"finished", routing_key=queue)

    began = 0.0
    with trio.fail_after(30):  # startup, the test, and the whole shutdown
        async with open_app(app):
            with trio.fail_after(MUST_HAPPEN):
                await started.wait()
            began = trio.current_time()
    took = trio.current_time() - began
    timer = app.timers.get("slow")
    assert timer is not None
    assert (timer.runs, timer.failures, timer.cancelled) == (1, 0, 0)
    assert 0.8 < took < 8.0  # waited for the run, well within the grace period
    assert [d.body for d in await broker.drain(queue)] == [b"finished"]


async def test_shutdown_cancels_a_tick_past_the_grace_period(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(grace_period=0.5)
    started = trio.Event()
    finished = False

    @app.every(3600, run_at_startup=True, name="endless")
    async def endless(app: App) -> None:
        nonlocal finished
        started.set()
        await trio.sleep(60)
        finished = True

    began = 0.0
    with trio.fail_after(30):  # startup, the test, and the whole shutdown
        async with open_app(app):
            with trio.fail_after(MUST_HAPPEN):
                await started.wait()
            began = trio.current_time()
    took = trio.current_time() - began
    assert 0.4 < took < 8.0
    assert not finished
    timer = app.timers.get("endless")
    assert timer is not None
    assert (timer.cancelled, timer.running) == (1, 0)
    warnings = [
        r for r in caplog.records if r.name == "trioworker.timers" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "endless" in warnings[0].getMessage()
