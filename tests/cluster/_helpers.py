"""Helpers of the cluster tests: queues on the cluster, what a worker's log says, waits.

The stage is set and inspected over AMQP through a node that is up (never through the CLI
in a polling loop: each call costs ~0.5 s). Messages carry their id as ASCII digits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import trio

from tests.support.cluster import Cluster
from trioworker.amqp import AMQPError, BasicProperties, Confirmation, connect

#: Upper bound for things that must happen (generous: two cores shared by three nodes).
MUST_HAPPEN = 90.0
PUBLISH_WINDOW = 2000
PERSISTENT = BasicProperties(delivery_mode=2)

T = TypeVar("T")

_OPEN_ON_NODE = re.compile(r"AMQP connection '(?P<name>[^']+)' open on node (?P<node>\S+)")


def node_in_log(log: str, connection: str = "default") -> str | None:
    """The node (``host:port``) the log says ``connection`` opened on last."""
    nodes = [m["node"] for m in _OPEN_ON_NODE.finditer(log) if m["name"] == connection]
    return nodes[-1] if nodes else None


def port_of(node: str) -> int:
    return int(node.rsplit(":", 1)[1])


async def declare(url: str, name: str, arguments: Mapping[str, Any]) -> None:
    async with connect(url, connection_name="tw-test-cluster-declare") as conn:
        channel = await conn.open_channel()
        await channel.queue_declare(name, durable=True, arguments=dict(arguments))


async def fill(url: str, queue: str, ids: Iterable[int]) -> None:
    """Publish one persistent message per id, with confirms (a window); all must be acked."""
    async with connect(url, connection_name="tw-test-cluster-fill") as conn:
        channel = await conn.open_channel()
        await channel.confirm_select()
        confirmations: list[Confirmation] = []
        for count, message_id in enumerate(ids, 1):
            body = str(message_id).encode()
            confirmations.append(
                await channel.publish(body, routing_key=queue, properties=PERSISTENT)
            )
            if count % PUBLISH_WINDOW == 0:
                await channel.wait_for_confirms(PUBLISH_WINDOW)
        await channel.wait_for_confirms(0)
        nacked = [c.delivery_tag for c in confirmations if not c.acked]
        assert not nacked, f"the broker nacked {len(nacked)} of the test's publishes"


async def queue_state(cluster: Cluster, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, asked of a node that is up."""
    async with connect(cluster.running()[0].amqp_url, connection_name="tw-test-cluster") as conn:
        channel = await conn.open_channel()
        reply = await channel.queue_declare(queue, passive=True)
        return reply.message_count or 0, reply.consumer_count or 0


async def drain(cluster: Cluster, queue: str) -> list[int]:
    """Take every message of ``queue`` (acked) and return their ids."""
    ids: list[int] = []
    async with connect(cluster.running()[0].amqp_url, connection_name="tw-test-cluster") as conn:
        channel = await conn.open_channel()
        while True:
            delivery = await channel.basic_get(queue)
            if delivery is None:
                return ids
            ids.append(int(delivery.body))
            channel.basic_ack(delivery.delivery_tag)


async def delete_queues(cluster: Cluster, *names: str) -> None:
    """Teardown: delete the test's queues (a missing one is no error)."""
    with trio.move_on_after(30):
        try:
            url = cluster.running()[0].amqp_url
            async with connect(url, connection_name="tw-test-cluster-teardown") as conn:
                channel = await conn.open_channel()
                for name in names:
                    await channel.queue_delete(name)
        except (AMQPError, IndexError):
            pass


async def wait_for(condition: Callable[[], bool], what: str, within: float = MUST_HAPPEN) -> None:
    """Poll ``condition`` (cheap: files, counters) until true; fail naming ``what``."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await trio.sleep(0.1)


async def wait_for_value(
    probe: Callable[[], Awaitable[T]], expected: T, what: str, within: float = MUST_HAPPEN
) -> None:
    """Poll ``await probe()`` (an AMQP query) until it returns ``expected``."""
    deadline = time.monotonic() + within
    while (got := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what} (last: {got!r})")
        await trio.sleep(0.5)
