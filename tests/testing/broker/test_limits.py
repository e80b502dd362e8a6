"""Bounded memory: a client that does not read stops being served (and read), not
buffered for; an oversized message is refused before its body is assembled."""

from __future__ import annotations

import pytest
import trio
from pamqp import body, commands, header

from trioworker.amqp import Connection, PreconditionFailedError, connect
from trioworker.testing import MemoryBroker

from .raw import raw_client

KIB = b"x" * 1024


async def test_deliveries_to_a_client_that_does_not_read_wait_in_the_queue(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("flood")
    async with raw_client(mbroker) as reader:
        await reader.send(1, commands.Basic.Consume(queue="flood", no_ack=True))
        await reader.until("Basic.ConsumeOk")
        async with conn.channel() as ch:
            await ch.confirm_select()
            for _ in range(5000):  # 5 MB, consumed without acks by a client not reading
                await ch.publish(KIB, routing_key="flood")
            await ch.wait_for_confirms()
        held_back = len(mbroker.queue("flood").messages)
        assert held_back > 3000  # at most ~1.3 MB went to the connection and its pipe
        assert not mbroker.is_idle()
        received = 0
        with trio.fail_after(20):
            while received < 5000:  # once it reads, everything comes
                _, frame = await reader.receive()
                received += isinstance(frame, body.ContentBody)
    assert mbroker.queue("flood").messages == []


async def test_a_publisher_that_does_not_read_is_not_read_either(mbroker: MemoryBroker) -> None:
    publish = commands.Basic.Publish(routing_key="nowhere", mandatory=True)
    props = commands.Basic.Properties()
    async with raw_client(mbroker) as client:

        async def flood() -> None:
            from pamqp import frame

            one = (
                frame.marshal(publish, 1)
                + frame.marshal(header.ContentHeader(0, len(KIB), props), 1)
                + frame.marshal(body.ContentBody(KIB), 1)
            )
            for _ in range(20_000):  # each comes back as a Basic.Return it never reads
                await client.send_bytes(one)

        with trio.move_on_after(1) as timer:
            await flood()
        assert timer.cancelled_caught  # its writes block: the broker stopped reading it
        # What the broker took in is bounded: ~1 MiB of returns queued plus the pipes.
        assert len(mbroker.published) < 3000
        async with connect(mbroker.url) as other, other.channel() as ch:  # others are served
            await ch.queue_declare("responsive")


async def test_an_oversized_message_closes_its_channel_with_406() -> None:
    broker = MemoryBroker(max_message_size=10_000)
    async with broker.running(), connect(broker.url) as conn:
        async with conn.channel() as ch:
            await ch.confirm_select()
            with pytest.raises(PreconditionFailedError) as info:
                await ch.basic_publish(b"x" * 300_000, routing_key="q")  # three body frames
            assert info.value.reply_text == (
                "PRECONDITION_FAILED - message size 300000 is larger than configured max size 10000"
            )
        async with conn.channel() as ch:  # the connection is fine, its body frames dropped
            await ch.confirm_select()
            await ch.queue_declare("q")
            await ch.basic_publish(b"x" * 10_000, routing_key="q")
    assert [len(m.body) for m in broker.queue("q").messages] == [10_000]


async def test_bodies_larger_than_a_frame_are_split_and_joined(conn: Connection) -> None:
    big = bytes(range(256)) * 2000  # 512 000 bytes: four frames each way
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("big")
        await ch.basic_publish(big, routing_key="big")
        delivery = await ch.basic_get("big", no_ack=True)
    assert delivery is not None and delivery.body == big
