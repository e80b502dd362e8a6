"""Graceful stop in-process: ``app.shutdown()`` from a handler, leaving ``open_app``
mid-run, a handler that outlives the grace period, and a stop while reconnecting.

The promise (docs/amqp.md, "Graceful shutdown"): cancel consumers, let in-flight handler calls
finish (within the grace period), send their decisions, return buffered-but-unhandled
deliveries to the queue. Every message is either handled exactly once or back in the queue.
"""

from __future__ import annotations

import logging

import pytest
import trio

from tests.conftest import broker_address
from tests.support.proxy import open_tcp_proxy
from trioworker import App, Message, open_app

from ._helpers import (
    assert_accounted,
    declare,
    decode,
    drain,
    fill,
    wait_for,
    wait_settled,
)
from .test_reconnect import proxy_url

pytestmark = pytest.mark.broker

TOTAL = 2_000
BULK_SIZE = 50
CONCURRENCY = [1, 4]


class Handler:
    """Records the ids a call was given when it starts and when it completes."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep
        self.started: list[list[int]] = []
        self.completed: list[list[int]] = []
        self.on_start: list = []  # callables run with the call number, before the sleep

    @property
    def handled(self) -> list[int]:
        return [i for bulk in self.completed for i in bulk]

    @property
    def all_completed(self) -> bool:
        """Every call that started also completed (in any order)."""
        return sorted(map(tuple, self.started)) == sorted(map(tuple, self.completed))

    async def __call__(self, messages: list[Message]) -> None:
        ids = [decode(m.body) for m in messages]
        number = len(self.started)
        self.started.append(ids)
        for hook in self.on_start:
            hook(number)
        await trio.sleep(self.sleep)
        self.completed.append(ids)


async def check_accounted(url: str, vhost: str, queue: str, handler: Handler) -> list[int]:
    await wait_settled(queue, vhost)
    remaining = await drain(url, queue)
    assert_accounted(range(TOTAL), handler.handled, remaining, allow_both=set())
    return remaining


@pytest.mark.parametrize("concurrency", CONCURRENCY)
async def test_shutdown_called_from_a_handler(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, concurrency: int
) -> None:
    """The 6th handler call asks for the stop; it and every other running call complete and
    are acked, the rest is requeued."""
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    app = App(amqp_url, name=app_name, grace_period=10)
    handler = Handler(sleep=0.1)
    asked_at: list[int] = []

    def stop_after_five(number: int) -> None:
        if number == 5:
            asked_at.append(number)
            app.shutdown()

    handler.on_start.append(stop_after_five)
    app.amqp.consume(queue, bulk_size=BULK_SIZE, flush_interval=0.2, concurrency=concurrency)(
        handler
    )
    with trio.fail_after(30):
        await app.serve(install_signal_handlers=False)

    assert asked_at == [5]
    assert not app.running
    assert handler.all_completed, "a running handler call was cut short"
    assert 6 <= len(handler.completed) <= 6 + concurrency
    assert handler.started[5] in handler.completed
    remaining = await check_accounted(amqp_url, amqp_vhost, queue, handler)
    assert len(remaining) == TOTAL - len(handler.handled) > 0


@pytest.mark.parametrize("concurrency", CONCURRENCY)
async def test_leaving_open_app_mid_run(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, concurrency: int
) -> None:
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    handler = Handler(sleep=0.1)
    with trio.fail_after(30):
        async with open_app(name=app_name, amqp_url=amqp_url, grace_period=10) as app:
            app.amqp.consume(
                queue, bulk_size=BULK_SIZE, flush_interval=0.2, concurrency=concurrency
            )(handler)
            # Leave while handler calls are running. They sleep most of the time, but with
            # several slots all of them can be between bulks for a moment (acks going out,
            # deliveries coming in): wait for a moment when one is running.
            await wait_for(
                lambda: (
                    len(handler.handled) >= 300 and len(handler.started) > len(handler.completed)
                ),
                "300 messages handled and a handler call running",
            )
    assert handler.all_completed, "a running handler call was cut short"
    remaining = await check_accounted(amqp_url, amqp_vhost, queue, handler)
    assert remaining, "everything was handled: the block was left too late"


async def test_handler_past_the_grace_period_is_cancelled_and_requeued(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker")
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    handler = Handler(sleep=3600)
    with trio.fail_after(30):
        async with open_app(name=app_name, amqp_url=amqp_url, grace_period=1.0) as app:
            app.amqp.consume(queue, bulk_size=BULK_SIZE, flush_interval=0.2)(handler)
            await wait_for(lambda: len(handler.started) == 1, "the first call started")
            start = trio.current_time()
        elapsed = trio.current_time() - start
    assert 1.0 <= elapsed < 1.0 + 5.0, f"stop took {elapsed:.1f} s with a 1 s grace period"
    assert handler.completed == []
    assert any("grace period" in r.getMessage() for r in caplog.records)
    remaining = await check_accounted(amqp_url, amqp_vhost, queue, handler)
    assert sorted(remaining) == list(range(TOTAL)), "the cancelled bulk must be requeued"


async def test_stop_while_reconnecting(
    amqp_url: str, amqp_vhost: str, queues, app_name: str
) -> None:
    """The connection is gone and the broker unreachable: a stop must not wait for it."""
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    handler = Handler(sleep=0.1)
    async with open_tcp_proxy(*broker_address(amqp_url)) as proxy:
        with trio.fail_after(30):
            async with open_app(
                name=app_name, amqp_url=proxy_url(proxy, amqp_url), grace_period=10
            ) as app:
                app.amqp.consume(queue, bulk_size=BULK_SIZE, flush_interval=0.2)(handler)
                supervisor = next(iter(app.amqp.supervisors))
                await wait_for(lambda: len(handler.handled) >= 100, "100 messages handled")
                proxy.refuse_new = True
                await proxy.cut()
                await wait_for(lambda: supervisor.reconnects >= 2, "failed reconnects")
                start = trio.current_time()
            elapsed = trio.current_time() - start
    assert elapsed < 5.0, f"stop took {elapsed:.1f} s while the broker was unreachable"
    # At least once across the cut: what was handled may be back in the queue; none lost.
    await wait_settled(queue, amqp_vhost)
    remaining = await drain(amqp_url, queue)
    assert_accounted(range(TOTAL), handler.handled, remaining, allow_both=set(handler.handled))
