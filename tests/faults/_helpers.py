"""Helpers of the fault tests: fill and drain queues, read broker-side counts, wait, check.

Messages carry their id as ASCII digits (``b"17"``), so every test can say which ids were
handled, which are still in the queue, and which went missing.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from tests.support import rabbitmqctl
from trioworker.amqp import Confirmation, connect

#: Upper bound for things that must happen (generous: CI machines are slow).
MUST_HAPPEN = 30.0
PUBLISH_WINDOW = 1000


def encode(message_id: int) -> bytes:
    return str(message_id).encode()


def decode(body: bytes) -> int:
    return int(body.decode())


async def declare(url: str, *names: str, arguments: Mapping[str, Any] | None = None) -> None:
    """Declare durable queues (as the framework's ``declare=True`` would)."""
    async with connect(url, connection_name="tw-test-faults-declare") as conn:
        channel = await conn.open_channel()
        for name in names:
            await channel.queue_declare(name, durable=True, arguments=arguments)


async def fill(url: str, queue: str, ids: Iterable[int]) -> None:
    """Publish one message per id with publisher confirms (window of 1000); all must be acked."""
    async with connect(url, connection_name="tw-test-faults-fill") as conn:
        channel = await conn.open_channel()
        await channel.confirm_select()
        confirmations: list[Confirmation] = []
        for count, message_id in enumerate(ids, 1):
            confirmations.append(await channel.publish(encode(message_id), routing_key=queue))
            if count % PUBLISH_WINDOW == 0:
                await channel.wait_for_confirms(PUBLISH_WINDOW)
        await channel.wait_for_confirms(0)
        nacked = [c.delivery_tag for c in confirmations if not c.acked]
        assert not nacked, f"the broker nacked {len(nacked)} of the test's publishes"


async def message_count(url: str, queue: str) -> int:
    """Ready messages of ``queue`` (passive declare)."""
    async with connect(url, connection_name="tw-test-faults-count") as conn:
        channel = await conn.open_channel()
        reply = await channel.queue_declare(queue, passive=True)
        return reply.message_count or 0


async def drain(url: str, queue: str) -> list[int]:
    """Take every ready message out of ``queue`` with ``basic.get`` (no ack); their ids."""
    ids: list[int] = []
    async with connect(url, connection_name="tw-test-faults-drain") as conn:
        channel = await conn.open_channel()
        while True:
            delivery = await channel.basic_get(queue, no_ack=True)
            if delivery is None:
                return ids
            ids.append(decode(delivery.body))


@dataclass(frozen=True)
class QueueCounts:
    ready: int
    unacked: int
    consumers: int


def queue_counts(queue: str, vhost: str = "/") -> QueueCounts:
    """Ready / unacknowledged messages and consumers, from the queue process (rabbitmqctl)."""
    out = rabbitmqctl.run(
        "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged",
        "consumers", "--formatter", "json",
    )  # fmt: skip
    for row in json.loads(out):
        if row["name"] == queue:
            return QueueCounts(
                int(row["messages_ready"]),
                int(row["messages_unacknowledged"]),
                int(row["consumers"]),
            )
    raise LookupError(f"queue {queue!r} not found in vhost {vhost!r}")


async def queue_counts_async(queue: str, vhost: str = "/") -> QueueCounts:
    return await trio.to_thread.run_sync(queue_counts, queue, vhost)


async def wait_for(
    condition: Callable[[], bool], what: str, within: float = MUST_HAPPEN, poll: float = 0.01
) -> None:
    """Poll a cheap in-process ``condition`` until it holds; fail with ``what`` if it doesn't."""
    with trio.move_on_after(within):
        while not condition():  # noqa: ASYNC110 - polling state owned by other tasks/processes
            await trio.sleep(poll)
        return
    raise AssertionError(f"timed out after {within} s waiting for: {what}")


async def wait_for_counts(
    queue: str,
    vhost: str,
    accept: Callable[[QueueCounts], bool],
    what: str,
    within: float = MUST_HAPPEN,
) -> QueueCounts:
    """Poll rabbitmqctl (about 1 s a call) until the queue's counts satisfy ``accept``."""
    counts: QueueCounts | None = None
    with trio.move_on_after(within):
        while True:
            counts = await queue_counts_async(queue, vhost)
            if accept(counts):
                return counts
            await trio.sleep(0.2)
    raise AssertionError(f"timed out after {within} s waiting for {what}; last: {counts}")


async def wait_settled(queue: str, vhost: str) -> QueueCounts:
    """Wait until nobody consumes ``queue`` and nothing is unacknowledged (all requeued)."""
    return await wait_for_counts(
        queue, vhost, lambda c: c.consumers == 0 and c.unacked == 0, "no consumer, no unacked"
    )


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    with trio.move_on_after(within):
        while not await probe():  # noqa: ASYNC110 - polling the broker
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {within} s waiting for: {what}")


def duplicates(ids: Iterable[int]) -> dict[int, int]:
    """``{id: times}`` for ids that occur more than once."""
    return {i: n for i, n in Counter(ids).items() if n > 1}


def assert_accounted(
    expected: Iterable[int], handled: list[int], remaining: list[int], *, allow_both: set[int]
) -> None:
    """Every id is handled or still in the queue; none handled twice, none in the queue twice;
    ids that are in both must be in ``allow_both``; nothing unknown turned up."""
    expected_set = set(expected)
    handled_set = set(handled)
    remaining_set = set(remaining)
    assert not duplicates(handled), f"handled more than once: {sorted(duplicates(handled))[:20]}"
    assert not duplicates(remaining), f"in the queue twice: {sorted(duplicates(remaining))[:20]}"
    unknown = (handled_set | remaining_set) - expected_set
    assert not unknown, f"ids that were never published: {sorted(unknown)[:20]}"
    missing = expected_set - handled_set - remaining_set
    assert not missing, (
        f"{len(missing)} ids LOST (neither handled nor in the queue): {sorted(missing)[:20]}"
    )
    both = handled_set & remaining_set
    unexpected = both - allow_both
    assert not unexpected, (
        f"{len(unexpected)} ids handled AND still in the queue: {sorted(unexpected)[:20]}"
    )


_CHANNEL_ERROR = re.compile(
    r"unknown delivery tag|PRECONDITION_FAILED|broker closed channel \d+: 406", re.IGNORECASE
)


def channel_errors(records: Iterable[logging.LogRecord]) -> list[str]:
    """Log lines saying the broker closed a channel over a delivery tag (406)."""
    return [r.getMessage() for r in records if _CHANNEL_ERROR.search(r.getMessage())]


def channels_closed_by_broker(records: Iterable[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "broker closed channel" in r.getMessage()]
