"""Exchanges, queues, bindings, purge, delete, QoS: checked by what the broker then does."""

from __future__ import annotations

import pytest

from tests.support.helpers import eventually, nothing_more, take
from trioworker.amqp import (
    BasicProperties,
    Channel,
    Connection,
    NotFoundError,
    PreconditionFailedError,
)

pytestmark = pytest.mark.broker


async def get_body(channel: Channel, queue: str) -> bytes | None:
    delivery = await channel.basic_get(queue, no_ack=True)
    return None if delivery is None else delivery.body


@pytest.mark.parametrize("exchange_type", ["direct", "topic", "fanout", "headers"])
async def test_exchange_declare_passive_delete(
    conn: Connection, resources, exchange_type: str
) -> None:
    exchange = resources.exchange()
    channel = await conn.open_channel()
    await channel.exchange_declare(exchange, exchange_type)
    await channel.exchange_declare(exchange, exchange_type)  # idempotent
    await channel.exchange_declare(exchange, passive=True)
    other_type = "fanout" if exchange_type != "fanout" else "direct"
    with pytest.raises(PreconditionFailedError, match="inequivalent arg 'type'"):
        await channel.exchange_declare(exchange, other_type)
    channel = await conn.open_channel()
    await channel.exchange_delete(exchange)
    with pytest.raises(NotFoundError) as info:
        await channel.exchange_declare(exchange, passive=True)
    assert info.value.reply_code == 404
    assert exchange in info.value.reply_text


async def test_passive_declare_of_missing_exchange(channel: Channel, resources) -> None:
    with pytest.raises(NotFoundError):
        await channel.exchange_declare(resources.exchange("missing"), passive=True)


async def test_queue_declare_and_passive_counts(conn: Connection, resources) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    ok = await channel.queue_declare(queue)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (queue, 0, 0)
    await channel.confirm_select()
    for i in range(3):
        await channel.basic_publish(b"%d" % i, routing_key=queue)
    ok = await channel.queue_declare(queue, passive=True)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (queue, 3, 0)
    consumer_channel = await conn.open_channel()
    await consumer_channel.basic_qos(1)
    consumer = await consumer_channel.basic_consume(queue)
    await take(consumer, 1)
    ok = await channel.queue_declare(queue, passive=True)
    assert (ok.message_count, ok.consumer_count) == (2, 1)  # ready only; 1 unacked


async def test_server_named_queue(channel: Channel) -> None:
    ok = await channel.queue_declare("", exclusive=True)
    assert ok.queue.startswith("amq.gen-")
    again = await channel.queue_declare(ok.queue, passive=True)
    assert again.queue == ok.queue


async def test_quorum_queue(conn: Connection, resources) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.confirm_select()
    await channel.basic_publish(b"on a raft", routing_key=queue)
    ok = await channel.queue_declare(queue, passive=True)
    assert ok.message_count == 1
    # The argument really reached the broker: declaring it as a classic queue is refused.
    with pytest.raises(PreconditionFailedError, match="x-queue-type"):
        await channel.queue_declare(queue, durable=True)
    channel = await conn.open_channel()
    assert await channel.queue_delete(queue) == 1


async def test_message_ttl_and_dead_letter_exchange(channel: Channel, resources) -> None:
    dlx, dead, queue = resources.exchange("dlx"), resources.queue("dead"), resources.queue()
    await channel.exchange_declare(dlx, "fanout")
    await channel.queue_declare(dead)
    await channel.queue_bind(dead, dlx)
    await channel.queue_declare(
        queue, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": dlx}
    )
    await channel.confirm_select()
    await channel.basic_publish(b"short-lived", routing_key=queue)
    delivery = await eventually(
        lambda: channel.basic_get(dead, no_ack=True), lambda d: d is not None
    )
    assert delivery is not None
    assert delivery.body == b"short-lived"
    death = delivery.properties.headers["x-death"][0]
    assert death["reason"] == "expired"
    assert death["queue"] == queue
    assert (await channel.queue_declare(queue, passive=True)).message_count == 0


async def test_bind_and_unbind_route_messages(channel: Channel, resources) -> None:
    exchange, queue = resources.exchange(), resources.queue()
    await channel.exchange_declare(exchange, "topic")
    await channel.queue_declare(queue)
    await channel.confirm_select()

    async def route(key: str) -> bytes | None:
        await channel.basic_publish(key.encode(), exchange=exchange, routing_key=key)
        return await get_body(channel, queue)

    assert await route("a.b") is None  # not bound yet
    await channel.queue_bind(queue, exchange, "a.*")
    assert await route("a.b") == b"a.b"
    assert await route("b.a") is None
    assert await route("a.b.c") is None
    await channel.queue_bind(queue, exchange, "#.c")
    assert await route("a.b.c") == b"a.b.c"
    await channel.queue_unbind(queue, exchange, "a.*")
    assert await route("a.b") is None
    assert await route("x.c") == b"x.c"
    await channel.queue_unbind(queue, exchange, "#.c")
    assert await route("x.c") is None


async def test_headers_exchange_binding_arguments(channel: Channel, resources) -> None:
    exchange, queue = resources.exchange(), resources.queue()
    await channel.exchange_declare(exchange, "headers")
    await channel.queue_declare(queue)
    await channel.queue_bind(queue, exchange, arguments={"x-match": "all", "kind": "job"})
    await channel.confirm_select()
    for kind in ("job", "event"):
        props = BasicProperties(headers={"kind": kind})
        await channel.basic_publish(
            kind.encode(), exchange=exchange, routing_key="", properties=props
        )
    assert await get_body(channel, queue) == b"job"
    assert await get_body(channel, queue) is None


async def test_exchange_to_exchange_binding(channel: Channel, resources) -> None:
    source, destination = resources.exchange("src"), resources.exchange("dst")
    queue = resources.queue()
    await channel.exchange_declare(source, "direct")
    await channel.exchange_declare(destination, "fanout")
    await channel.queue_declare(queue)
    await channel.queue_bind(queue, destination)
    await channel.exchange_bind(destination, source, "k")
    await channel.confirm_select()
    await channel.basic_publish(b"hop", exchange=source, routing_key="k")
    assert await get_body(channel, queue) == b"hop"
    await channel.exchange_unbind(destination, source, "k")
    await channel.basic_publish(b"hop", exchange=source, routing_key="k")
    assert await get_body(channel, queue) is None


async def test_purge_returns_count(channel: Channel, resources) -> None:
    queue = resources.queue()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    for i in range(7):
        await channel.basic_publish(b"%d" % i, routing_key=queue)
    assert await channel.queue_purge(queue) == 7
    assert (await channel.queue_declare(queue, passive=True)).message_count == 0
    assert await channel.queue_purge(queue) == 0


async def test_delete_returns_count(conn: Connection, resources) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    for i in range(4):
        await channel.basic_publish(b"%d" % i, routing_key=queue)
    assert await channel.queue_delete(queue) == 4
    with pytest.raises(NotFoundError):
        await channel.queue_declare(queue, passive=True)


async def test_delete_if_empty(conn: Connection, resources) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    await channel.queue_declare(queue)
    await channel.confirm_select()
    await channel.basic_publish(b"x", routing_key=queue)
    with pytest.raises(PreconditionFailedError):
        await channel.queue_delete(queue, if_empty=True)
    channel = await conn.open_channel()
    assert (await channel.queue_declare(queue, passive=True)).message_count == 1


async def test_basic_qos_bounds_unacked_deliveries(conn: Connection, resources) -> None:
    queue = resources.queue()
    publisher = await conn.open_channel()
    await publisher.queue_declare(queue)
    await publisher.confirm_select()
    for i in range(25):
        await publisher.publish(b"%d" % i, routing_key=queue)
    await publisher.wait_for_confirms()

    channel = await conn.open_channel()
    await channel.basic_qos(10)
    consumer = await channel.basic_consume(queue)
    first = await take(consumer, 10)
    assert [d.body for d in first] == [b"%d" % i for i in range(10)]
    assert await nothing_more(consumer)  # the 11th waits for an ack
    channel.basic_ack(first[0].delivery_tag)
    (eleventh,) = await take(consumer, 1)
    assert eleventh.body == b"10"
    assert await nothing_more(consumer, 0.5)
    channel.basic_ack(eleventh.delivery_tag, multiple=True)  # acks the other 9 too
    rest = await take(consumer, 10)
    assert [d.body for d in rest] == [b"%d" % i for i in range(11, 21)]
    assert await nothing_more(consumer, 0.5)
    channel.basic_ack(rest[-1].delivery_tag, multiple=True)
    last = await take(consumer, 4)
    channel.basic_ack(last[-1].delivery_tag, multiple=True)
    await channel.close()  # anything left unacked would be requeued now
    ok = await publisher.queue_declare(queue, passive=True)
    assert (ok.message_count, ok.consumer_count) == (0, 0)
