"""How the reader hands deliveries out: callback-mode consumers, and deliveries for a
consumer tag the channel does not know (rejected with requeue, never held)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from pamqp import commands, frame

from tests.support.helpers import MUST_HAPPEN, eventually
from tests.support.proxy import open_tcp_proxy
from trioworker.amqp import (
    Channel,
    ConsumerCancelledError,
    Delivery,
    LocalProtocolError,
    connect,
)

pytestmark = pytest.mark.broker


async def fill(channel: Channel, queue: str, count: int) -> None:
    await channel.queue_declare(queue)
    await channel.confirm_select()
    for i in range(count):
        await channel.publish(b"m%d" % i, routing_key=queue)
    await channel.wait_for_confirms()


async def test_a_callback_consumer_gets_each_delivery_from_the_reader(
    channel: Channel, resources
) -> None:
    queue = resources.queue()
    await fill(channel, queue, 5)
    got: list[Delivery] = []
    consumer = await channel.basic_consume(queue, on_delivery=got.append)
    await eventually(trio.lowlevel.checkpoint, lambda _: len(got) == 5)
    assert [d.body for d in got] == [b"m%d" % i for i in range(5)]
    assert consumer.buffered == 0  # nothing queued in the consumer
    with pytest.raises(LocalProtocolError):  # nothing to iterate
        await consumer.__anext__()
    channel.basic_ack(got[-1].delivery_tag, multiple=True)

    await channel.basic_cancel(consumer.consumer_tag)
    with trio.fail_after(MUST_HAPPEN):
        await consumer.wait_ended()  # a cancel by us ends it quietly
    assert not consumer.active
    assert (await channel.queue_declare(queue, passive=True)).message_count == 0


async def test_a_callback_consumer_learns_of_a_broker_cancel(conn, resources) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    await channel.queue_declare(queue)
    consumer = await channel.basic_consume(queue, no_ack=True, on_delivery=lambda d: None)
    other = await conn.open_channel()
    await other.queue_delete(queue)
    with trio.fail_after(MUST_HAPPEN), pytest.raises(ConsumerCancelledError):
        await consumer.wait_ended()
    assert not channel.is_closed


async def test_a_raising_callback_is_logged_and_the_connection_goes_on(
    channel: Channel, resources, caplog: pytest.LogCaptureFixture
) -> None:
    queue = resources.queue()
    await fill(channel, queue, 2)
    seen: list[bytes] = []

    def on_delivery(delivery: Delivery) -> None:
        seen.append(delivery.body)
        if delivery.body == b"m0":
            raise RuntimeError("bug in the callback")

    await channel.basic_consume(queue, no_ack=True, on_delivery=on_delivery)
    await eventually(trio.lowlevel.checkpoint, lambda _: len(seen) == 2)
    assert seen == [b"m0", b"m1"]
    assert "on_delivery of consumer" in caplog.text
    assert not channel.is_closed and not channel.connection.is_closed
    await channel.queue_declare(queue, passive=True)  # still answers


async def test_a_delivery_for_an_unknown_consumer_is_requeued(
    broker_host_port, resources, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer the channel does not know — here one the broker was asked for behind the
    client's back, as if it had been forgotten client-side with deliveries in flight — gets
    its deliveries rejected with requeue: the message goes back to the queue instead of
    staying unacked (invisible) until the channel closes."""
    queue = resources.queue()
    async with open_tcp_proxy(*broker_host_port) as proxy, connect(proxy.amqp_url()) as conn:
        channel = await conn.open_channel()
        await fill(channel, queue, 1)
        await trio.testing.wait_all_tasks_blocked()  # the client sends nothing now
        ghost = commands.Basic.Consume(queue=queue, consumer_tag="ghost", nowait=True)
        with caplog.at_level(logging.WARNING, logger="trioworker.amqp"):
            await proxy.inject(frame.marshal(ghost, channel.number), upstream=True)
            await eventually(
                trio.lowlevel.checkpoint, lambda _: "unknown consumer 'ghost'" in caplog.text
            )
            cancel = commands.Basic.Cancel(consumer_tag="ghost", nowait=True)
            await proxy.inject(frame.marshal(cancel, channel.number), upstream=True)
        # Rejected with requeue: back in the queue, ready. (Dropped or held, it would
        # stay unacked on this channel: 0 ready messages.)
        ok = await eventually(
            lambda: channel.queue_declare(queue, passive=True),
            lambda ok: ok.message_count == 1,
        )
        assert ok.consumer_count == 0
        assert not channel.is_closed
        got = await channel.basic_get(queue, no_ack=True)
        assert got is not None and (got.body, got.redelivered) == (b"m0", True)
