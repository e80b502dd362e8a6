"""Publishing: confirms, returns, nacks (flow control: tests/faults/test_blocked_connection.py)."""

from __future__ import annotations

import pytest
import trio

from tests.support.helpers import MUST_HAPPEN, eventually
from trioworker.amqp import (
    Channel,
    Connection,
    MessageReturnedError,
    NotFoundError,
    PublishNackedError,
    Returned,
)

pytestmark = pytest.mark.broker


async def test_confirmations(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    await channel.confirm_select()  # already on: a no-op
    confirmation = await channel.publish(b"one", routing_key=queue)
    assert confirmation.delivery_tag == 1
    with trio.fail_after(MUST_HAPPEN):
        await confirmation.wait()
    assert confirmation.done and confirmation.acked
    await channel.basic_publish(b"two", routing_key=queue)
    assert channel.unconfirmed == 0
    assert (await channel.queue_declare(queue, passive=True)).message_count == 2


async def test_without_confirms_the_confirmation_is_resolved_at_once(
    channel: Channel, resources
) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    confirmation = await channel.publish(b"x", routing_key=queue)
    assert confirmation.delivery_tag == 0
    assert confirmation.done and confirmation.acked
    await confirmation.wait()


async def test_wait_for_confirms_bounds_the_window(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    confirmations = []
    peak = 0
    with trio.fail_after(30):
        for i in range(500):
            confirmations.append(await channel.publish(b"%d" % i, routing_key=queue))
            peak = max(peak, channel.unconfirmed)
            await channel.wait_for_confirms(max_outstanding=8)
            assert channel.unconfirmed <= 8
        await channel.wait_for_confirms()
    assert channel.unconfirmed == 0
    # The window was used (more than one in flight) and bounded (never past 8 + the new one);
    # how full it got depends on how fast the broker confirms.
    assert 1 < peak <= 9
    assert [c.delivery_tag for c in confirmations] == list(range(1, 501))
    assert all(c.acked for c in confirmations)
    assert (await channel.queue_declare(queue, passive=True)).message_count == 500


async def test_wait_for_confirms_is_a_cancellation_point_even_without_waiting(
    channel: Channel, resources
) -> None:
    """It does not yield when the window has room (so the writer can coalesce), but a
    cancelled caller still stops there."""
    await channel.confirm_select()
    with trio.CancelScope() as scope:
        scope.cancel()
        await channel.wait_for_confirms(max_outstanding=100)
        pytest.fail("wait_for_confirms did not notice the cancellation")
    assert scope.cancelled_caught


async def test_a_windowed_publish_loop_coalesces_its_writes(channel: Channel, resources) -> None:
    """publish + wait_for_confirms(window) in a loop must not hand the writer one message
    at a time: with a window of 1000, 2000 publishes take far fewer socket writes."""
    queue = resources.queue()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    conn = channel.connection
    writes_before = conn.writes
    with trio.fail_after(30):
        for i in range(2000):
            await channel.wait_for_confirms(max_outstanding=999)
            await channel.publish(b"%d" % i, routing_key=queue)
        await channel.wait_for_confirms()
    writes = conn.writes - writes_before
    assert writes < 200, f"{writes} socket writes for 2000 publishes"
    assert (await channel.queue_declare(queue, passive=True)).message_count == 2000


async def test_mandatory_unroutable_publish_is_returned(channel: Channel, resources) -> None:
    queue = resources.queue()
    unroutable = resources.queue("nobody-binds-this")
    await channel.queue_declare(queue)
    await channel.confirm_select()
    before = await channel.publish(b"before", routing_key=queue, mandatory=True)
    lost = await channel.publish(b"lost", routing_key=unroutable, mandatory=True)
    after = await channel.publish(b"after", routing_key=queue, mandatory=True)
    with trio.fail_after(MUST_HAPPEN):
        await before.wait()
        with pytest.raises(MessageReturnedError) as info:
            await lost.wait()
        await after.wait()
    error = info.value
    assert error.reply_code == 312
    assert "NO_ROUTE" in error.reply_text
    assert error.returned.routing_key == unroutable
    assert error.returned.body == b"lost"
    assert not lost.acked
    assert before.acked and after.acked
    delivered = [await channel.basic_get(queue, no_ack=True) for _ in range(2)]
    assert [d.body for d in delivered if d is not None] == [b"before", b"after"]


async def test_mandatory_returns_match_the_right_publish(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    nowhere = resources.queue("nowhere")
    plan = [i % 3 == 1 for i in range(30)]  # every third publish is unroutable
    confirmations = [
        await channel.publish(b"%d" % i, routing_key=nowhere if lost else queue, mandatory=True)
        for i, lost in enumerate(plan)
    ]
    for i, (lost, confirmation) in enumerate(zip(plan, confirmations, strict=True)):
        if lost:
            with pytest.raises(MessageReturnedError) as info:
                await confirmation.wait()
            assert info.value.returned.body == b"%d" % i
        else:
            await confirmation.wait()
    assert (await channel.queue_declare(queue, passive=True)).message_count == 20


async def test_return_without_confirms_goes_to_on_return(channel: Channel, resources) -> None:
    returned: list[Returned] = []
    channel.on_return = returned.append
    unroutable = resources.queue("nowhere")
    await channel.publish(b"lost", routing_key=unroutable, mandatory=True)
    await eventually(trio.lowlevel.checkpoint, lambda _: len(returned) == 1)
    assert returned[0].body == b"lost"
    assert returned[0].reply_code == 312
    assert returned[0].delivery_tag is None


async def test_nacked_publish(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(
        queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await channel.confirm_select()
    first = await channel.publish(b"fits", routing_key=queue)
    second = await channel.publish(b"overflows", routing_key=queue)
    with trio.fail_after(MUST_HAPPEN):
        await first.wait()
        with pytest.raises(PublishNackedError):
            await second.wait()
    assert first.acked and not second.acked
    assert not channel.is_closed
    with pytest.raises(PublishNackedError):
        await channel.basic_publish(b"still full", routing_key=queue)
    assert await channel.queue_purge(queue) == 1
    await channel.basic_publish(b"room again", routing_key=queue)


async def test_publish_to_missing_exchange_closes_the_channel(conn: Connection, resources) -> None:
    channel = await conn.open_channel()
    await channel.confirm_select()
    confirmation = await channel.publish(
        b"x", exchange=resources.exchange("missing"), routing_key="k"
    )
    with trio.fail_after(MUST_HAPPEN), pytest.raises(NotFoundError):
        await confirmation.wait()
    assert channel.is_closed
    assert not conn.is_closed
