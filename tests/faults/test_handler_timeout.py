"""A handler call that hangs past the route's ``timeout=``, alone and with a connection cut.

Promised (docs/amqp.md): past ``timeout`` the call is cancelled and its bulk — only that
bulk — gets ``on_exception``; the worker keeps going. A connection lost while a call hangs
cancels it without a decision (the channel is gone): the broker redelivers the bulk and,
after the reconnect, it is handled.

Both tests dead-letter on exception (``on_exception=REJECT`` into a DLX queue), so the
on_exception decisions are visible as messages in the dead-letter queue.
"""

from __future__ import annotations

import logging

import pytest
import trio

from tests.support import rabbitmqctl
from trioworker import Actions, App, Message, open_app

from ._helpers import (
    declare,
    decode,
    drain,
    duplicates,
    eventually,
    fill,
    message_count,
    wait_for,
    wait_for_counts,
)

pytestmark = pytest.mark.broker

TOTAL = 200
BULK_SIZE = 10
HANG_ID = 57

CONCURRENCY = [1, 4]
CONCURRENCY_AND_ACKS = [1, 4]


class HangingHandler:
    """Hangs (forever) on the first bulk that contains ``HANG_ID``; other calls succeed."""

    def __init__(self) -> None:
        self.attempts: list[tuple[list[int], list[bool]]] = []
        self.completed: list[int] = []
        self.hung: list[int] | None = None
        self.hanging = False
        self.hang_ended = trio.Event()
        self.completed_during_hang = 0

    async def __call__(self, messages: list[Message]) -> None:
        ids = [decode(m.body) for m in messages]
        self.attempts.append((ids, [m.redelivered for m in messages]))
        if HANG_ID in ids and self.hung is None:
            self.hung = ids
            self.hanging = True
            try:
                await trio.sleep_forever()
            finally:
                self.hanging = False
                self.hang_ended.set()
        await trio.sleep(0.02)
        self.completed.extend(ids)
        if self.hanging:
            self.completed_during_hang += len(ids)


async def setup(url: str, queues) -> tuple[str, str]:
    queue, dead = queues.new("q"), queues.new("dlq")
    await declare(url, dead)
    await declare(
        url,
        queue,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
    )
    await fill(url, queue, range(TOTAL))
    return queue, dead


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed on a bulk" in r.getMessage()]


@pytest.mark.parametrize("concurrency", CONCURRENCY)
async def test_only_the_hanging_bulk_gets_on_exception(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, caplog, concurrency: int
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker")
    queue, dead = await setup(amqp_url, queues)
    handler = HangingHandler()
    app = App(amqp_url, name=app_name, grace_period=5)
    app.amqp.consume(
        queue, bulk_size=BULK_SIZE, flush_interval=0.2, concurrency=concurrency,
        timeout=1.0, on_exception=Actions.REJECT,
    )(handler)  # fmt: skip

    with trio.fail_after(60):
        async with open_app(app):
            await wait_for(lambda: handler.hung is not None, "the hanging call")
            await wait_for(
                lambda: len(handler.completed) >= TOTAL - BULK_SIZE,
                "every other bulk handled",
            )
            await eventually(
                lambda: _count_is(amqp_url, dead, BULK_SIZE), "the hung bulk dead-lettered", 10
            )
            await wait_for_counts(
                queue, amqp_vhost, lambda c: c.ready == 0 and c.unacked == 0, "queue empty"
            )

    assert handler.hung is not None
    hung = set(handler.hung)
    assert sorted(await drain(amqp_url, dead)) == sorted(hung), "on_exception hit other bulks"
    assert not duplicates(handler.completed)
    assert set(handler.completed) == set(range(TOTAL)) - hung
    logs = failure_logs(caplog)
    assert len(logs) == 1, logs
    assert "HandlerTimeout" in logs[0] and f"a bulk of {BULK_SIZE}" in logs[0]
    # The worker kept going: bulks after the hung one were handled.
    assert max(handler.completed) > max(hung)
    if concurrency > 1:
        assert handler.completed_during_hang > 0, "nothing else ran while one call hung"


@pytest.mark.parametrize("concurrency", CONCURRENCY_AND_ACKS)
async def test_connection_cut_during_a_hang(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, caplog, concurrency: int
) -> None:
    """The connection dies while a call hangs (before its timeout): no on_exception for it,
    the bulk is redelivered after the reconnect and handled; nothing is handled twice."""
    caplog.set_level(logging.INFO, logger="trioworker")
    queue, dead = await setup(amqp_url, queues)
    handler = HangingHandler()
    app = App(amqp_url, name=app_name, grace_period=5)
    app.amqp.consume(
        queue, bulk_size=BULK_SIZE, flush_interval=0.2, concurrency=concurrency,
        timeout=20.0, on_exception=Actions.REJECT,
    )(handler)  # fmt: skip
    supervisor = next(iter(app.amqp.supervisors))

    with trio.fail_after(60):
        async with open_app(app):
            await wait_for(lambda: handler.hung is not None, "the hanging call")
            if concurrency > 1:
                await wait_for(
                    lambda: len(handler.completed) >= TOTAL - BULK_SIZE,
                    "every other bulk handled during the hang",
                )
            # The broker has the acks of everything completed so far: a duplicate after
            # the cut could only come from a decision that went wrong.
            done = len(handler.completed)
            await wait_for_counts(
                queue,
                amqp_vhost,
                lambda c: c.ready + c.unacked == TOTAL - done,
                f"the broker to count {done} acks",
            )
            assert handler.hanging, "the hang ended before the cut"
            await rabbitmqctl.close_connection_by_name_async(
                f"{app_name}:default", "fault test: cut during a hanging handler"
            )
            await wait_for(lambda: handler.hang_ended.is_set(), "the hang cancelled by the cut")
            await wait_for(lambda: len(handler.completed) >= TOTAL, "every message handled")
            await wait_for_counts(
                queue, amqp_vhost, lambda c: c.ready == 0 and c.unacked == 0, "queue empty"
            )

    assert handler.hung is not None
    assert supervisor.reconnects >= 1
    assert not duplicates(handler.completed), "handled twice across the cut"
    assert set(handler.completed) == set(range(TOTAL))
    assert await message_count(amqp_url, dead) == 0, "on_exception applied to a cut call"
    assert failure_logs(caplog) == []
    retries = [redelivered for ids, redelivered in handler.attempts if ids == handler.hung]
    assert len(retries) == 2 and all(retries[1]), "the hung bulk must come back redelivered"


async def test_a_hanging_call_does_not_stall_the_other_slots(
    amqp_url: str, amqp_vhost: str, queues, app_name: str
) -> None:
    """concurrency=4, prefetch=40, no timeout: while one call hangs, the three other slots
    handle everything else and their acks reach the broker (only the hung 10 stay unacked)."""
    queue, _ = await setup(amqp_url, queues)
    handler = HangingHandler()
    app = App(amqp_url, name=app_name, prefetch=40, grace_period=1)
    app.amqp.consume(queue, bulk_size=BULK_SIZE, flush_interval=0.2, concurrency=4)(handler)
    with trio.fail_after(60):
        async with open_app(app):
            await wait_for(lambda: handler.hung is not None, "the hanging call")
            await wait_for(
                lambda: len(handler.completed) >= TOTAL - BULK_SIZE,
                "the other slots to handle everything else",
                within=15,
            )
            await wait_for_counts(
                queue,
                amqp_vhost,
                lambda c: c.ready == 0 and c.unacked == BULK_SIZE,
                "only the hung bulk unacknowledged",
                within=10,
            )
            assert handler.hanging
        # Leaving the block: the hung call is cancelled after the grace period, requeued.
    assert handler.hung is not None
    assert sorted(await drain(amqp_url, queue)) == sorted(handler.hung)


async def _count_is(url: str, queue: str, expected: int) -> bool:
    return await message_count(url, queue) == expected
