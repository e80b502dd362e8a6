"""Channel and connection errors a client's request causes, with RabbitMQ's codes."""

from __future__ import annotations

import pytest
from pamqp import commands

from trioworker.amqp import (
    BasicProperties,
    Connection,
    ConnectionClosedError,
    MessageReturnedError,
    PreconditionFailedError,
    connect,
)
from trioworker.testing import MemoryBroker

from .raw import raw_client


async def test_publisher_confirms_are_batched_with_multiple(mbroker: MemoryBroker) -> None:
    async with raw_client(mbroker) as client:
        await client.send(1, commands.Confirm.Select())
        await client.until("Confirm.SelectOk")
        burst = b""
        from pamqp import frame, header

        for _ in range(10):
            burst += frame.marshal(commands.Basic.Publish(routing_key="nowhere"), 1)
            burst += frame.marshal(header.ContentHeader(0, 0, commands.Basic.Properties()), 1)
        await client.send_bytes(burst)  # one write: one batch
        _, ack = await client.until("Basic.Ack")
        assert (ack.delivery_tag, ack.multiple) == (10, True)
        await client.send_bytes(burst[: len(burst) // 10])
        _, ack = await client.until("Basic.Ack")
        assert (ack.delivery_tag, ack.multiple) == (11, False)


async def test_direct_reply_to_needs_a_no_ack_reply_consumer(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        with pytest.raises(PreconditionFailedError, match="fast reply consumer does not exist"):
            await ch.basic_publish(
                b"q", routing_key="x", properties=BasicProperties(reply_to="amq.rabbitmq.reply-to")
            )
    async with conn.channel() as ch:
        with pytest.raises(PreconditionFailedError, match="reply consumer cannot acknowledge"):
            await ch.basic_consume("amq.rabbitmq.reply-to")


async def test_direct_reply_to_round_trip(conn: Connection, mbroker: MemoryBroker) -> None:
    replies = []
    async with conn.channel() as ch:
        await ch.basic_consume("amq.rabbitmq.reply-to", no_ack=True, on_delivery=replies.append)
        await ch.confirm_select()
        await ch.queue_declare("service")
        await ch.basic_publish(
            b"ping",
            routing_key="service",
            properties=BasicProperties(reply_to="amq.rabbitmq.reply-to"),
        )
        [request] = mbroker.queue("service").messages
        reply_to = request.properties.reply_to
        assert reply_to.startswith("amq.rabbitmq.reply-to.")
        async with connect(mbroker.url) as server, server.channel() as sch:
            await sch.confirm_select()
            await sch.basic_publish(b"pong", routing_key=reply_to)
            # RabbitMQ 3.10 returns a mandatory direct reply even though it delivers it.
            with pytest.raises(MessageReturnedError):
                await sch.basic_publish(b"pong 2", routing_key=reply_to, mandatory=True)
            with pytest.raises(MessageReturnedError):
                await sch.basic_publish(b"lost", routing_key=reply_to + "x", mandatory=True)
        await ch.queue_declare("service", passive=True)
    assert [r.body for r in replies] == [b"pong", b"pong 2"]
    assert "amq.rabbitmq.reply-to" not in " ".join(mbroker.queues())


async def test_immediate_is_refused_with_540_on_the_connection(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.publish(b"m", routing_key="x", immediate=True)
        with pytest.raises(ConnectionClosedError) as info:
            await conn.wait_closed()
    assert (info.value.reply_code, info.value.reply_text) == (
        540,
        "NOT_IMPLEMENTED - immediate=true",
    )


async def test_reusing_a_consumer_tag_is_530(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("tags")
        await ch.basic_consume("tags", consumer_tag="same")
        with pytest.raises(ConnectionClosedError) as info:
            await ch._call(commands.Basic.Consume(queue="tags", consumer_tag="same"))
    assert info.value.reply_code == 530
    assert info.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'same'"


async def test_flow_active_false_is_540_like_rabbitmq(mbroker: MemoryBroker) -> None:
    async with raw_client(mbroker) as client:
        await client.send(1, commands.Channel.Flow(active=True))
        _, ok = await client.until("Channel.FlowOk")
        assert ok.active
        await client.send(1, commands.Channel.Flow(active=False))
        _, close = await client.until("Connection.Close")
        assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - active=false")


async def test_frames_after_a_channel_error_are_discarded_until_close_ok(
    mbroker: MemoryBroker,
) -> None:
    async with raw_client(mbroker) as client:
        await client.send(1, commands.Queue.Declare(queue="missing", passive=True))
        _, close = await client.until("Channel.Close")
        assert close.reply_code == 404 and (close.class_id, close.method_id) == (50, 10)
        await client.send(1, commands.Queue.Declare(queue="ignored"))  # discarded
        await client.send(1, commands.Channel.CloseOk())
        await client.send(1, commands.Channel.Open())
        await client.until("Channel.OpenOk")
        await client.send(1, commands.Queue.Declare(queue="counted"))
        await client.until("Queue.DeclareOk")
    assert mbroker.queues() == ["counted"]


async def test_a_method_interrupting_content_is_505(mbroker: MemoryBroker) -> None:
    async with raw_client(mbroker) as client:
        await client.send(1, commands.Basic.Publish(routing_key="x"))
        await client.send(1, commands.Queue.Declare(queue="y"))
        _, close = await client.until("Connection.Close")
        assert close.reply_code == 505
        assert "expected content header" in close.reply_text
