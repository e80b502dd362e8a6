"""Publisher backpressure: a publisher waits while more than HIGH_WATER bytes wait for the
socket, so a stalled network costs bounded memory, and resumes once the writer drained."""

from __future__ import annotations

import pytest
import trio

from tests.support.helpers import MUST_HAPPEN, eventually
from tests.support.proxy import open_tcp_proxy
from trioworker.amqp import connect
from trioworker.amqp._connection import HIGH_WATER

pytestmark = pytest.mark.broker

BODY = b"x" * 65536
#: Far more than the kernel's socket buffers (client send + proxy receive) and HIGH_WATER
#: together take, so the publisher must stall well before the end.
COUNT = 600  # 37.5 MiB
#: A generous allowance for what loopback sockets buffer (measured: a few hundred KiB).
KERNEL_BUFFERS = 8 * 1024 * 1024


async def test_a_publisher_waits_while_the_socket_is_stalled(broker_host_port, resources) -> None:
    queue = resources.queue()
    async with open_tcp_proxy(*broker_host_port) as proxy, connect(proxy.amqp_url()) as conn:
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        await channel.confirm_select()
        published = 0
        peak = 0
        done = trio.Event()

        async def publisher() -> None:
            nonlocal published, peak
            for _ in range(COUNT):
                await channel.publish(BODY, routing_key=queue)
                published += 1
                peak = max(peak, conn.pending_output)
            done.set()

        proxy.stall()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)

            async def stalled() -> int:
                before = published
                await trio.sleep(0.5)
                return published - before

            # The writer's send_all blocks once the kernel buffers are full; from then
            # on the output queue grows to HIGH_WATER and the publisher stops there.
            await eventually(stalled, lambda progress: progress == 0, within=30)
            assert not done.is_set(), "every publish went through a stalled socket"
            assert published < COUNT
            # Bounded: the queue never holds more than one message past the mark
            # (publish checks, then queues); the writer holds at most as much again in
            # its blocked send_all, and the kernel buffers take the rest.
            assert peak <= HIGH_WATER + len(BODY) + 1024, peak
            assert published * len(BODY) <= 2 * HIGH_WATER + KERNEL_BUFFERS
            stuck_at = published
            await trio.sleep(1)  # it stays blocked: nothing drains
            assert published == stuck_at and not done.is_set()

            proxy.resume()
            with trio.fail_after(MUST_HAPPEN * 3):
                await done.wait()
        assert published == COUNT > stuck_at
        assert peak <= HIGH_WATER + len(BODY) + 1024, peak
        with trio.fail_after(MUST_HAPPEN * 3):
            await channel.wait_for_confirms()
        ok = await channel.queue_declare(queue, passive=True)
        assert ok.message_count == COUNT
        await channel.queue_purge(queue)
