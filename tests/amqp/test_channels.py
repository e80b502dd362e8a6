"""Channels: opening, closing (both ways), channel errors, channel-number reuse."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.support.helpers import MUST_HAPPEN
from tests.support.proxy import open_tcp_proxy
from trioworker.amqp import (
    ChannelClosedError,
    Connection,
    LocalProtocolError,
    NotFoundError,
    PreconditionFailedError,
    connect,
)
from trioworker.amqp.protocol import ChannelState

pytestmark = pytest.mark.broker


async def test_open_and_close(conn: Connection) -> None:
    channel = await conn.open_channel()
    assert channel.number == 1
    assert not channel.is_closed
    assert conn._core.channel_state(1) is ChannelState.OPEN
    await channel.close()
    assert channel.is_closed
    assert channel.error is not None and not channel.error.by_peer
    assert conn._core.channel_state(1) is None
    await channel.close()  # closing twice is a no-op
    await channel.wait_closed()  # closed by us: no error
    with pytest.raises(ChannelClosedError):
        await channel.queue_declare("", exclusive=True)
    assert not conn.is_closed


async def test_channel_context_manager(conn: Connection) -> None:
    async with conn.channel() as channel:
        ok = await channel.queue_declare("", exclusive=True)
        assert ok.queue.startswith("amq.gen-")
    assert channel.is_closed
    assert conn._core.channel_state(channel.number) is None


async def test_many_channels(conn: Connection) -> None:
    channels = []
    async with trio.open_nursery() as nursery:

        async def open_one() -> None:
            channels.append(await conn.open_channel())

        for _ in range(100):
            nursery.start_soon(open_one)
    numbers = sorted(ch.number for ch in channels)
    assert numbers == list(range(1, 101))

    async def use(channel) -> None:
        ok = await channel.queue_declare("", exclusive=True)
        await channel.queue_delete(ok.queue)

    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(use, channel)
    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(channel.close)
    assert all(ch.is_closed for ch in channels)
    assert not conn._channels


async def test_channel_max_is_enforced_locally(amqp_url: str) -> None:
    async with connect(amqp_url, channel_max=3) as conn:
        channels = [await conn.open_channel() for _ in range(3)]
        with pytest.raises(LocalProtocolError, match="all 3 channels are in use"):
            await conn.open_channel()
        await channels[1].close()
        again = await conn.open_channel()
        assert again.number == 2


async def test_broker_closes_channel_not_found(conn: Connection, resources) -> None:
    missing = resources.queue("missing")
    channel = await conn.open_channel()
    number = channel.number
    with trio.fail_after(MUST_HAPPEN), pytest.raises(NotFoundError) as info:
        await channel.queue_declare(missing, passive=True)
    error = info.value
    assert error.reply_code == 404
    assert "NOT_FOUND" in error.reply_text
    assert missing in error.reply_text
    assert (error.class_id, error.method_id) == (50, 10)  # Queue.Declare
    assert error.by_peer
    assert channel.is_closed
    assert channel.error is error
    # Later calls raise the same error at once.
    with pytest.raises(NotFoundError):
        await channel.queue_declare("", exclusive=True)
    with pytest.raises(NotFoundError):
        await channel.publish(b"x", routing_key="nowhere")
    with pytest.raises(NotFoundError):
        channel.basic_ack(1)
    with pytest.raises(NotFoundError):
        await channel.wait_closed()
    # The connection is unharmed, and the freed channel number can be opened again (which
    # only works if we answered the broker's Channel.Close with CloseOk). A plain
    # open_channel() avoids it while other numbers are free.
    assert not conn.is_closed
    assert (await conn.open_channel()).number != number
    fresh = await conn.open_channel(number)
    assert fresh.number == number
    with trio.fail_after(MUST_HAPPEN):
        ok = await fresh.queue_declare("", exclusive=True)
    assert ok.queue
    assert not conn.is_closed


async def test_precondition_failed_on_redeclare_with_other_arguments(
    conn: Connection, resources
) -> None:
    queue = resources.queue()
    channel = await conn.open_channel()
    await channel.queue_declare(queue, arguments={"x-message-ttl": 1000})
    await channel.queue_declare(queue, arguments={"x-message-ttl": 1000})  # same: fine
    with trio.fail_after(MUST_HAPPEN), pytest.raises(PreconditionFailedError) as info:
        await channel.queue_declare(queue, arguments={"x-message-ttl": 2000})
    assert info.value.reply_code == 406
    assert "PRECONDITION_FAILED" in info.value.reply_text
    assert "x-message-ttl" in info.value.reply_text
    assert channel.is_closed
    other = await conn.open_channel()
    ok = await other.queue_declare(queue, passive=True)
    assert ok.queue == queue


async def test_errors_on_one_channel_leave_others_alone(conn: Connection, resources) -> None:
    queue = resources.queue()
    good = await conn.open_channel()
    bad = await conn.open_channel()
    await good.queue_declare(queue)
    consumer = await good.basic_consume(queue)
    with pytest.raises(NotFoundError):
        await bad.queue_declare(resources.queue("missing"), passive=True)
    await good.confirm_select()
    await good.basic_publish(b"still here", routing_key=queue)
    with trio.fail_after(MUST_HAPPEN):
        delivery = await consumer.__anext__()
    assert delivery.body == b"still here"
    good.basic_ack(delivery.delivery_tag)


async def test_channel_number_is_reused_only_after_close_ok(broker_host_port) -> None:
    """While our Channel.Close is unanswered the number stays taken (spec 4.2.7)."""
    async with open_tcp_proxy(*broker_host_port) as proxy, connect(proxy.amqp_url()) as conn:
        first = await conn.open_channel()
        assert first.number == 1
        opened: list = []

        async def open_another() -> None:
            opened.append(await conn.open_channel())

        with trio.fail_after(MUST_HAPPEN):
            async with trio.open_nursery() as nursery:
                proxy.stall()  # hold the CloseOk (and everything else)
                nursery.start_soon(first.close)
                await trio.testing.wait_all_tasks_blocked()
                assert conn._core.channel_state(1) is ChannelState.CLOSING
                assert not first.is_closed
                nursery.start_soon(open_another)
                await trio.testing.wait_all_tasks_blocked()
                # The new channel did not take number 1.
                assert conn._core.channel_state(1) is ChannelState.CLOSING
                assert conn._core.channel_state(2) is ChannelState.OPENING
                proxy.resume()
        assert first.is_closed
        assert [ch.number for ch in opened] == [2]
        assert conn._core.channel_state(1) is None
        third = await conn.open_channel()  # CloseOk arrived: 1 is free again
        assert third.number == 1
        await third.queue_declare("", exclusive=True)
        await opened[0].queue_declare("", exclusive=True)
