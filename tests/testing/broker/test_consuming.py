"""Consuming: prefetch, round robin, acks, requeue order, cancels, basic.get."""

from __future__ import annotations

import pytest
import trio

from trioworker.amqp import (
    AccessRefusedError,
    ChannelClosedError,
    Connection,
    ConsumerCancelledError,
    Delivery,
    PreconditionFailedError,
    connect,
)
from trioworker.testing import MemoryBroker

from .util import until


async def _fill(conn: Connection, queue: str, count: int, **declare: object) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare(queue, **declare)  # type: ignore[arg-type]
        for i in range(count):
            await ch.basic_publish(str(i).encode(), routing_key=queue)


async def _take(consumer: object, count: int) -> list[Delivery]:
    taken = []
    with trio.fail_after(10):
        async for delivery in consumer:  # type: ignore[attr-defined]
            taken.append(delivery)
            if len(taken) == count:
                break
    return taken


async def test_prefetch_bounds_unacked_deliveries(conn: Connection, mbroker: MemoryBroker) -> None:
    await _fill(conn, "p", 10)
    async with conn.channel() as ch:
        await ch.basic_qos(prefetch_count=3)
        consumer = await ch.basic_consume("p")
        first = await _take(consumer, 3)
        await ch.queue_declare("p", passive=True)  # a round trip: nothing more came
        assert len(mbroker.queue("p").unacked) == 3
        assert len(mbroker.queue("p").messages) == 7
        ch.basic_ack(first[-1].delivery_tag, multiple=True)
        more = await _take(consumer, 3)
        assert [d.body for d in first + more] == [str(i).encode() for i in range(6)]
        assert mbroker.queue("p").acked == 3


async def test_round_robin_between_consumers(conn: Connection) -> None:
    await _fill(conn, "rr", 0)
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    async with conn.channel() as ch:
        await ch.basic_consume(
            "rr", consumer_tag="a", no_ack=True, on_delivery=lambda d: got["a"].append(d.body)
        )
        await ch.basic_consume(
            "rr", consumer_tag="b", no_ack=True, on_delivery=lambda d: got["b"].append(d.body)
        )
        await ch.confirm_select()
        for i in range(6):
            await ch.basic_publish(str(i).encode(), routing_key="rr")
        await ch.queue_declare("rr", passive=True)
    assert got == {"a": [b"0", b"2", b"4"], "b": [b"1", b"3", b"5"]}


async def test_requeued_messages_return_to_the_head_in_order_redelivered(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    await _fill(conn, "order", 5)
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("order")
        d = await _take(consumer, 5)
        await ch.basic_cancel(consumer.consumer_tag)  # else they would come straight back
        # Requeue 3, then 1, then 0 and 2 at once: back in their original order.
        ch.basic_reject(d[3].delivery_tag, requeue=True)
        ch.basic_nack(d[1].delivery_tag, requeue=True)
        ch.basic_ack(d[4].delivery_tag)
        ch.basic_nack(d[2].delivery_tag, multiple=True, requeue=True)  # 0 and 2 (1 is back)
        await ch.queue_declare("order", passive=True)
    view = mbroker.queue("order")
    assert [(m.body, m.redelivered) for m in view.messages] == [
        (b"0", True),
        (b"1", True),
        (b"2", True),
        (b"3", True),
    ]
    assert (view.acked, view.requeued) == (1, 4)


async def test_a_closed_channel_requeues_what_it_held(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    await _fill(conn, "held", 3)
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("held")
        await _take(consumer, 3)
    assert [(m.body, m.redelivered) for m in mbroker.queue("held").messages] == [
        (b"0", True),
        (b"1", True),
        (b"2", True),
    ]
    async with connect(mbroker.url) as other, other.channel() as ch:  # a lost connection too
        consumer = await ch.basic_consume("held")
        await _take(consumer, 3)
        mbroker.close_all_connections()
        await until(lambda: mbroker.connections == 0)  # both: close_all_connections
    assert len(mbroker.queue("held").messages) == 3


async def test_unknown_and_double_acks_are_406(conn: Connection) -> None:
    await _fill(conn, "acks", 1)
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("acks")
        [delivery] = await _take(consumer, 1)
        ch.basic_ack(delivery.delivery_tag)
        ch.basic_ack(delivery.delivery_tag)
        with pytest.raises(PreconditionFailedError) as info:
            await ch.wait_closed()
    assert info.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 1"
    assert (info.value.class_id, info.value.method_id) == (60, 80)


async def test_reject_without_requeue_and_without_a_dlx_drops(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    await _fill(conn, "drop", 2)
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("drop")
        d = await _take(consumer, 2)
        ch.basic_nack(d[1].delivery_tag, multiple=True, requeue=False)
        await ch.queue_declare("drop", passive=True)
    view = mbroker.queue("drop")
    assert (view.messages, view.rejected, view.dead_lettered) == ([], 2, 0)


async def test_basic_get_and_get_empty(conn: Connection, mbroker: MemoryBroker) -> None:
    await _fill(conn, "get", 2)
    async with conn.channel() as ch:
        first = await ch.basic_get("get")
        assert first is not None and (first.body, first.message_count) == (b"0", 1)
        second = await ch.basic_get("get", no_ack=True)
        assert second is not None and second.body == b"1"
        assert await ch.basic_get("get") is None
        assert len(mbroker.queue("get").unacked) == 1
        await ch.basic_recover()
        again = await ch.basic_get("get")
        assert again is not None and (again.body, again.redelivered) == (b"0", True)


async def test_deleting_a_queue_cancels_its_consumers(conn: Connection) -> None:
    await _fill(conn, "doomed", 0)
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("doomed")
        async with conn.channel() as other:
            await other.queue_delete("doomed")
        with pytest.raises(ConsumerCancelledError), trio.fail_after(5):
            async for _ in consumer:
                pass


async def test_exclusive_consumers(conn: Connection) -> None:
    await _fill(conn, "solo", 0)
    async with conn.channel() as ch:
        await ch.basic_consume("solo", exclusive=True)
        async with conn.channel() as other:
            with pytest.raises(
                AccessRefusedError, match="queue 'solo' in vhost '/' in exclusive use"
            ):
                await other.basic_consume("solo")


async def test_single_active_consumer(conn: Connection) -> None:
    await _fill(conn, "sac", 0, arguments={"x-single-active-consumer": True})
    got: list[str] = []
    async with conn.channel() as ch:
        await ch.basic_consume(
            "sac", consumer_tag="one", no_ack=True, on_delivery=lambda d: got.append("one")
        )
        await ch.basic_consume(
            "sac", consumer_tag="two", no_ack=True, on_delivery=lambda d: got.append("two")
        )
        await ch.confirm_select()
        await ch.basic_publish(b"1", routing_key="sac")
        await ch.basic_cancel("one")
        await ch.basic_publish(b"2", routing_key="sac")
        await ch.queue_declare("sac", passive=True)
    assert got == ["one", "two"]


async def test_quorum_delivery_limit_and_delivery_count(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    await ch_declare_dlq(conn)
    await _fill(
        conn,
        "qq",
        1,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "qq.dlq",
        },
    )
    counts = []
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("qq")
        for _ in range(3):
            [d] = await _take(consumer, 1)
            counts.append(((d.properties.headers or {}).get("x-delivery-count"), d.redelivered))
            ch.basic_reject(d.delivery_tag, requeue=True)
        await ch.queue_declare("qq", passive=True)
    assert counts == [(None, False), (1, True), (2, True)]
    [dead] = mbroker.queue("qq.dlq").messages
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    assert mbroker.queue("qq").messages == []


async def ch_declare_dlq(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("qq.dlq")


@pytest.mark.parametrize(
    ("call", "feature"),
    [
        ("tx", "transactions (tx.select)"),
        ("qos_global", "global QoS (basic.qos global=true)"),
        ("exchange_bind", "exchange-to-exchange bindings (exchange.bind/unbind)"),
        ("priority", "consumer priorities (x-priority)"),
        ("exchange_args", "the exchange argument 'alternate-exchange'"),
    ],
)
async def test_unimplemented_features_are_540_on_the_channel(
    conn: Connection, call: str, feature: str
) -> None:
    from pamqp import commands

    async with conn.channel() as ch:
        await ch.queue_declare("any")
        with pytest.raises(ChannelClosedError) as info:
            if call == "tx":
                await ch._call(commands.Tx.Select())
            elif call == "qos_global":
                await ch.basic_qos(10, global_=True)
            elif call == "exchange_bind":
                await ch.exchange_bind("amq.direct", "amq.fanout")
            elif call == "priority":
                await ch.basic_consume("any", arguments={"x-priority": 5})
            else:
                await ch.exchange_declare("alt", "direct", arguments={"alternate-exchange": "x"})
    assert (info.value.reply_code, info.value.reply_text) == (
        540,
        f"NOT_IMPLEMENTED - memory broker does not implement {feature}",
    )
