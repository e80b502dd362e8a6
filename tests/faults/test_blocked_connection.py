"""The broker's flow control: ``Connection.Blocked`` holds publishes until ``Unblocked``.

On a private node: a memory alarm blocks every publisher of the broker it is raised on,
so it is never raised on the shared one (another test's or a benchmark's publishes would
stall meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from tests.support.helpers import MUST_HAPPEN, eventually
from tests.support.private_node import PrivateNode
from trioworker.amqp import connect

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_blocked_connection_holds_publishes(
    private_node: PrivateNode, unique_name: Callable[..., str]
) -> None:
    """A memory alarm makes the broker send Connection.Blocked; publish() must wait until
    Connection.Unblocked."""
    queue = unique_name("blocked")
    async with connect(private_node.amqp_url, connection_name=unique_name("conn")) as conn:
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        await channel.confirm_select()
        await channel.basic_publish(b"warm-up", routing_key=queue)
        published: list[float] = []

        async def publish() -> None:
            confirmation = await channel.publish(b"held", routing_key=queue)
            published.append(trio.current_time())
            await confirmation.wait()

        alarm = False
        try:
            await trio.to_thread.run_sync(private_node.set_memory_alarm, True)
            alarm = True
            # RabbitMQ blocks a connection (and says so) once it publishes during an alarm;
            # this publish goes out, the broker stops reading, and sends Connection.Blocked.
            trigger = await channel.publish(b"trigger", routing_key=queue)
            with trio.fail_after(MUST_HAPPEN):
                await eventually(trio.lowlevel.checkpoint, lambda _: conn.is_blocked)
            assert conn.blocked_reason  # e.g. "low on memory"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await trio.sleep(2)
                assert not published, "publish() went through while the broker blocks us"
                assert conn.is_blocked
                await trio.to_thread.run_sync(private_node.set_memory_alarm, False)
                alarm = False
                unblocked_at = trio.current_time()
                with trio.fail_after(MUST_HAPPEN):
                    await eventually(trio.lowlevel.checkpoint, lambda _: bool(published))
            assert published[0] >= unblocked_at - 0.1
            with trio.fail_after(MUST_HAPPEN):
                await trigger.wait()
            assert not conn.is_blocked
            assert conn.blocked_reason is None
        finally:
            if alarm:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(private_node.set_memory_alarm, False)
        ok = await channel.queue_declare(queue, passive=True)
        assert ok.message_count == 3  # warm-up, trigger, held
        await channel.queue_delete(queue)
