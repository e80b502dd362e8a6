"""Consuming: acks, nacks, rejects, redelivery, dead-lettering, bodies, properties, cancel."""

from __future__ import annotations

import datetime
import os
import struct

import pytest
import trio
import trio.testing

from tests.support.helpers import MUST_HAPPEN, eventually, nothing_more, take, with_query
from tests.support.proxy import open_tcp_proxy
from trioworker.amqp import (
    BasicProperties,
    Channel,
    Connection,
    ConsumerCancelledError,
    PropertyDecodeError,
    connect,
)
from trioworker.amqp.protocol import _frames as frames

pytestmark = pytest.mark.broker


async def declare_with_messages(channel: Channel, queue: str, count: int, **kwargs) -> None:
    await channel.queue_declare(queue, **kwargs)
    await channel.confirm_select()
    for i in range(count):
        await channel.publish(b"m%d" % i, routing_key=queue)
    await channel.wait_for_confirms()


async def test_ack_nack_reject_multiple(conn: Connection, resources) -> None:
    queue = resources.queue()
    admin = await conn.open_channel()
    await declare_with_messages(admin, queue, 10)
    channel = await conn.open_channel()
    consumer = await channel.basic_consume(queue)
    assert consumer.active
    deliveries = await take(consumer, 10)
    assert [d.body for d in deliveries] == [b"m%d" % i for i in range(10)]
    assert not any(d.redelivered for d in deliveries)
    assert all(d.consumer_tag == consumer.consumer_tag for d in deliveries)
    tags = [d.delivery_tag for d in deliveries]
    assert tags == sorted(tags)

    channel.basic_ack(tags[2], multiple=True)  # m0..m2 done
    channel.basic_nack(tags[5], multiple=True, requeue=False)  # m3..m5 dropped (no DLX)
    channel.basic_reject(tags[6], requeue=True)  # m6 comes back
    (again,) = await take(consumer, 1)
    assert (again.body, again.redelivered) == (b"m6", True)
    assert again.delivery_tag > tags[-1]
    channel.basic_nack(tags[8], multiple=True, requeue=True)  # m7, m8 come back
    redelivered = await take(consumer, 2)
    assert sorted(d.body for d in redelivered) == [b"m7", b"m8"]
    assert all(d.redelivered for d in redelivered)
    channel.basic_ack(again.delivery_tag)
    for delivery in redelivered:
        channel.basic_ack(delivery.delivery_tag)
    assert await nothing_more(consumer, 0.5)
    # Only m9 is unacked now; closing the channel requeues it.
    await channel.close()
    ok = await eventually(
        lambda: admin.queue_declare(queue, passive=True), lambda ok: ok.message_count >= 1
    )
    assert ok.message_count == 1
    last = await admin.basic_get(queue, no_ack=True)
    assert last is not None
    assert (last.body, last.redelivered, last.message_count) == (b"m9", True, 0)
    assert await admin.basic_get(queue) is None


async def test_reject_without_requeue_dead_letters(channel: Channel, resources) -> None:
    dlx, dead, queue = resources.exchange("dlx"), resources.queue("dead"), resources.queue()
    await channel.exchange_declare(dlx, "fanout")
    await channel.queue_declare(dead)
    await channel.queue_bind(dead, dlx)
    await declare_with_messages(channel, queue, 2, arguments={"x-dead-letter-exchange": dlx})
    consumer = await channel.basic_consume(queue)
    first, second = await take(consumer, 2)
    channel.basic_reject(first.delivery_tag, requeue=False)
    channel.basic_nack(second.delivery_tag, requeue=False)
    bodies = []
    for _ in range(2):
        delivery = await eventually(
            lambda: channel.basic_get(dead, no_ack=True), lambda d: d is not None
        )
        assert delivery is not None
        death = delivery.properties.headers["x-death"][0]
        assert (death["reason"], death["queue"]) == ("rejected", queue)
        bodies.append(delivery.body)
    assert bodies == [b"m0", b"m1"]
    assert (await channel.queue_declare(queue, passive=True)).message_count == 0


async def test_no_ack_consumer(channel: Channel, resources) -> None:
    queue = resources.queue()
    await declare_with_messages(channel, queue, 3)
    consumer = await channel.basic_consume(queue, no_ack=True)
    assert [d.body for d in await take(consumer, 3)] == [b"m0", b"m1", b"m2"]
    await channel.basic_cancel(consumer.consumer_tag)
    await channel.close()
    async with consumer.channel.connection.channel() as other:
        assert (await other.queue_declare(queue, passive=True)).message_count == 0


def body_sizes(frame_max: int) -> list[int]:
    return [0, 1, frame_max - 9, frame_max - 8, frame_max - 7, 2 * (frame_max - 8) + 1]


@pytest.mark.parametrize("frame_max", [131072, 4096])
async def test_bodies_of_any_size_round_trip(amqp_url: str, resources, frame_max: int) -> None:
    """Publishing splits at frame_max - 8, consuming reassembles; sizes around the edges."""
    queue = resources.queue()
    sizes = [*body_sizes(frame_max), 1024 * 1024, 5 * 1024 * 1024]
    bodies = [os.urandom(size) for size in sizes]
    async with connect(with_query(amqp_url, frame_max=frame_max)) as conn:
        assert conn.frame_max == frame_max
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        await channel.confirm_select()
        with trio.fail_after(30):
            for body in bodies:
                await channel.publish(body, routing_key=queue)
            await channel.wait_for_confirms()
            consumer = await channel.basic_consume(queue)
            received = await take(consumer, len(bodies), within=30)
        for size, body, delivery in zip(sizes, bodies, received, strict=True):
            assert len(delivery.body) == size
            assert delivery.body == body, f"body of {size} bytes differs"
        channel.basic_ack(received[-1].delivery_tag, multiple=True)
        # And basic_get assembles the same way.
        await channel.basic_cancel(consumer.consumer_tag)
        await channel.basic_publish(bodies[-1], routing_key=queue)
        got = await channel.basic_get(queue, no_ack=True)
        assert got is not None and got.body == bodies[-1]


async def test_published_frames_respect_frame_max(broker_host_port, resources) -> None:
    """On the wire, no frame we send exceeds the negotiated frame_max (RabbitMQ tolerates a
    slightly oversized frame, so only the bytes themselves show the split is right)."""
    queue = resources.queue()
    frame_max = 4096
    sent = bytearray()

    def record(data: bytes) -> bytes:
        sent.extend(data)
        return data

    body = os.urandom(3 * (frame_max - 8) + 5)
    async with open_tcp_proxy(*broker_host_port) as proxy:
        proxy.transform_upstream = record
        async with connect(with_query(proxy.amqp_url(), frame_max=frame_max)) as conn:
            channel = await conn.open_channel()
            await channel.queue_declare(queue)
            await channel.confirm_select()
            await channel.basic_publish(body, routing_key=queue)
            got = await channel.basic_get(queue, no_ack=True)
            assert got is not None and got.body == body
    assert sent[:8] == frames.PROTOCOL_HEADER
    pos, body_frames = 8, []
    while pos < len(sent):
        frame_type, _channel, size = struct.unpack_from(">BHI", sent, pos)
        assert size + 8 <= frame_max, f"frame of {size + 8} bytes > frame_max {frame_max}"
        assert sent[pos + 7 + size] == 0xCE
        if frame_type == frames.FRAME_BODY:
            body_frames.append(size)
        pos += size + 8
    assert pos == len(sent)
    assert body_frames == [frame_max - 8] * 3 + [5]


async def test_properties_round_trip(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    stamp = datetime.datetime(2024, 2, 29, 12, 30, 15, tzinfo=datetime.UTC)
    headers = {
        "str": "value",
        "int": 42,
        "big": 2**40,
        "neg": -7,
        "bool": True,
        "float": 1.5,
        "list": [1, "two", {"three": 3}],
        "nested": {"level": {"deeper": "yes", "n": 1}},
        "empty": {},
        "none": None,
    }
    props = BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="reply.queue",
        expiration="60000",
        message_id="msg-1",
        timestamp=stamp,
        message_type="order.created",
        user_id="guest",  # RabbitMQ checks it equals the connection's user
        app_id="trioworker-tests",
    )
    await channel.confirm_select()
    await channel.basic_publish(b"{}", routing_key=queue, properties=props)
    consumer = await channel.basic_consume(queue, no_ack=True)
    (delivery,) = await take(consumer, 1)
    got = delivery.properties
    assert got.content_type == "application/json"
    assert got.content_encoding == "utf-8"
    assert got.headers == headers
    assert got.delivery_mode == 2
    assert got.priority == 7
    assert got.correlation_id == "corr-1"
    assert got.reply_to == "reply.queue"
    assert got.expiration == "60000"
    assert got.message_id == "msg-1"
    assert got.timestamp == stamp
    assert got.message_type == "order.created"
    assert got.user_id == "guest"
    assert got.app_id == "trioworker-tests"
    assert delivery.routing_key == queue
    assert delivery.exchange == ""


async def test_no_properties_decode_empty(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    await channel.basic_publish(b"bare", routing_key=queue)
    delivery = await channel.basic_get(queue, no_ack=True)
    assert delivery is not None
    assert delivery.raw_properties == b"\x00\x00"
    assert delivery.properties.headers is None
    assert delivery.properties.content_type is None


async def test_basic_cancel_ends_iteration(channel: Channel, resources) -> None:
    queue = resources.queue()
    await declare_with_messages(channel, queue, 2)
    consumer = await channel.basic_consume(queue)
    seen: list[bytes] = []

    async def iterate() -> None:
        async for delivery in consumer:
            seen.append(delivery.body)
            channel.basic_ack(delivery.delivery_tag)

    with trio.fail_after(MUST_HAPPEN):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(iterate)
            await eventually(trio.lowlevel.checkpoint, lambda _: len(seen) == 2)
            await channel.basic_cancel(consumer.consumer_tag)
            # iterate() returns by itself: the nursery would otherwise hang.
    assert seen == [b"m0", b"m1"]
    assert not consumer.active
    # Nothing more is delivered to the cancelled consumer.
    await channel.basic_publish(b"after", routing_key=queue)
    assert (await channel.queue_declare(queue, passive=True)).message_count == 1
    assert not channel.is_closed


async def test_cancel_keeps_buffered_deliveries(channel: Channel, resources) -> None:
    queue = resources.queue()
    await declare_with_messages(channel, queue, 3)
    consumer = await channel.basic_consume(queue)
    await eventually(trio.lowlevel.checkpoint, lambda _: consumer.buffered == 3)
    await channel.basic_cancel(consumer.consumer_tag)
    bodies = []
    with trio.fail_after(MUST_HAPPEN):
        async for delivery in consumer:
            bodies.append(delivery.body)
            channel.basic_ack(delivery.delivery_tag)
    assert bodies == [b"m0", b"m1", b"m2"]


async def test_broker_cancel_raises_consumer_cancelled(conn: Connection, resources) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    await declare_with_messages(channel, queue, 1)
    consumer = await channel.basic_consume(queue)
    (first,) = await take(consumer, 1)
    channel.basic_ack(first.delivery_tag)
    other = await conn.open_channel()
    outcome: list[BaseException] = []

    async def iterate() -> None:
        try:
            async for _ in consumer:
                pass
        except ConsumerCancelledError as exc:
            outcome.append(exc)

    with trio.fail_after(MUST_HAPPEN):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(iterate)
            await trio.testing.wait_all_tasks_blocked()
            await other.queue_delete(queue)
    assert len(outcome) == 1
    assert outcome[0].consumer_tag == consumer.consumer_tag
    assert not consumer.active
    # Only the consumer ended: the channel and connection carry on.
    assert not channel.is_closed
    ok = await channel.queue_declare("", exclusive=True)
    assert ok.queue
    with pytest.raises(ConsumerCancelledError):  # and it stays ended
        await consumer.__anext__()


async def test_undecodable_properties_fail_only_that_message(conn: Connection, resources) -> None:
    """A timestamp before 1970 (here -256 as a signed 64-bit value) cannot be decoded into a
    datetime: reading ``.properties`` raises, everything else about the delivery works."""
    queue = resources.queue()
    channel = await conn.open_channel()  # no confirm mode: the raw publish has no seq number
    await channel.queue_declare(queue)
    raw_props = b"\x00\x40" + (2**64 - 256).to_bytes(8, "big")  # timestamp flag only
    body = b"from the past"
    number, core = channel.number, conn._core
    core._send(frames.encode_publish(number, "", queue, False, False))
    core._send(frames.encode_content_header(number, len(body), raw_props))
    for frame in frames.encode_body(number, body, conn.frame_max - 8):
        core._send(frame)
    conn.wake_writer()
    await channel.publish(b"fine", routing_key=queue, properties=BasicProperties(message_id="next"))

    consumer = await channel.basic_consume(queue)
    bad, good = await take(consumer, 2)
    assert bad.body == body
    assert bad.raw_properties == raw_props
    with pytest.raises(PropertyDecodeError):
        _ = bad.properties
    with pytest.raises(PropertyDecodeError):  # every time, not just the first
        _ = bad.properties
    channel.basic_ack(bad.delivery_tag)
    assert good.body == b"fine"
    assert good.properties.message_id == "next"
    channel.basic_ack(good.delivery_tag)
    assert not conn.is_closed
    assert not channel.is_closed
    ok = await channel.queue_declare(queue, passive=True)
    assert (ok.message_count, ok.consumer_count) == (0, 1)


async def test_batches(channel: Channel, resources) -> None:
    queue = resources.queue()
    await declare_with_messages(channel, queue, 50)
    consumer = await channel.basic_consume(queue)
    bodies: list[bytes] = []
    with trio.fail_after(MUST_HAPPEN):
        async for batch in consumer.batches(max_size=16):
            assert 1 <= len(batch) <= 16
            bodies.extend(d.body for d in batch)
            channel.basic_ack(batch[-1].delivery_tag, multiple=True)
            if len(bodies) == 50:
                await channel.basic_cancel(consumer.consumer_tag)
    assert bodies == [b"m%d" % i for i in range(50)]


async def test_two_consumers_on_one_channel(channel: Channel, resources) -> None:
    first_queue, second_queue = resources.queue("a"), resources.queue("b")
    await declare_with_messages(channel, first_queue, 3)
    await declare_with_messages(channel, second_queue, 3)
    first = await channel.basic_consume(first_queue, no_ack=True)
    second = await channel.basic_consume(second_queue, no_ack=True)
    assert first.consumer_tag != second.consumer_tag
    assert [d.routing_key for d in await take(first, 3)] == [first_queue] * 3
    assert [d.routing_key for d in await take(second, 3)] == [second_queue] * 3
