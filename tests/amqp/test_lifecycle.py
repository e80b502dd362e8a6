"""Connection close (by us and by the broker) and structured concurrency."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from tests.support import rabbitmqctl
from tests.support.helpers import MUST_HAPPEN, eventually
from tests.support.proxy import open_tcp_proxy
from trioworker.amqp import (
    Channel,
    ConnectionClosedError,
    NotFoundError,
    connect,
)

pytestmark = pytest.mark.broker


async def connection_names() -> set[str | None]:
    return {c.connection_name for c in await rabbitmqctl.list_connections_async()}


async def test_close_by_client(amqp_url: str, conn_name: str, resources) -> None:
    queue = resources.queue()
    async with connect(amqp_url, connection_name=conn_name) as conn:
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        consumer = await channel.basic_consume(queue)
        with trio.fail_after(MUST_HAPPEN):
            await conn.close()
        assert conn.is_closed
        error = conn.error
        assert isinstance(error, ConnectionClosedError)
        assert not error.by_peer
        assert error.reply_code == 200
        await conn.wait_closed()  # closed by us: returns without raising
        assert channel.is_closed
        with pytest.raises(ConnectionClosedError):
            await channel.queue_declare(queue, passive=True)
        with pytest.raises(ConnectionClosedError):
            await consumer.__anext__()
        with pytest.raises(ConnectionClosedError):
            await conn.open_channel()
        await conn.close()  # idempotent
        await eventually(connection_names, lambda names: conn_name not in names)


async def test_close_by_broker(amqp_url: str, conn_name: str, resources) -> None:
    """``rabbitmqctl close_connection``: pending calls and consumers get the broker's reason."""
    queue = resources.queue()
    reason = f"test {conn_name} says goodbye"
    async with connect(amqp_url, connection_name=conn_name) as conn:
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        consumer = await channel.basic_consume(queue)
        other = await conn.open_channel()
        errors: dict[str, BaseException] = {}

        async def catch(key: str, fn) -> None:
            try:
                await fn()
            except ConnectionClosedError as exc:
                errors[key] = exc

        async def iterate() -> None:
            async for _ in consumer:
                pass

        with trio.fail_after(MUST_HAPPEN):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(catch, "consumer", iterate)
                nursery.start_soon(catch, "channel", other.wait_closed)
                nursery.start_soon(catch, "connection", conn.wait_closed)
                await trio.testing.wait_all_tasks_blocked()
                closed = await rabbitmqctl.close_connection_by_name_async(conn_name, reason)
                assert closed == 1
        assert set(errors) == {"consumer", "channel", "connection"}
        for error in errors.values():
            assert isinstance(error, ConnectionClosedError)
            assert error.by_peer
            assert error.reply_code == 320  # CONNECTION_FORCED
            assert reason in error.reply_text
        assert conn.is_closed
        with pytest.raises(ConnectionClosedError, match="320"):
            await channel.queue_declare(queue, passive=True)
        with pytest.raises(ConnectionClosedError):
            await channel.publish(b"x", routing_key=queue)
        with pytest.raises(ConnectionClosedError):
            await conn.open_channel()
    # Leaving the block after a broker close is quiet.
    assert conn_name not in await connection_names()


async def test_leaving_the_block_closes_the_connection(amqp_url: str, conn_name: str) -> None:
    async with connect(amqp_url, connection_name=conn_name) as conn:
        await conn.open_channel()
        assert conn_name in await connection_names()
    assert conn.is_closed
    await eventually(connection_names, lambda names: conn_name not in names, within=5)


CONNECTION_CLOSE = b"\x00\x0a\x00\x32"  # class 10 method 50, as it starts a method payload


async def test_cancelled_block_still_closes_politely(broker_host_port, conn_name: str):
    """Cancelling the code inside ``async with connect()`` (a worker shutting down) must
    still send Connection.Close and get CloseOk, promptly -- not hang for the close timeout
    and then drop the socket."""
    sent = bytearray()

    def record(data: bytes) -> bytes:
        sent.extend(data)
        return data

    async with open_tcp_proxy(*broker_host_port) as proxy:
        proxy.transform_upstream = record
        with trio.move_on_after(1) as scope:
            async with connect(proxy.amqp_url(), connection_name=conn_name) as conn:
                await conn.open_channel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert conn.is_closed
        assert trio.current_time() - scope.deadline < 2, "close waited for its timeout"
        assert isinstance(conn.error, ConnectionClosedError)
        assert not conn.error.by_peer
        assert CONNECTION_CLOSE in sent
    await eventually(connection_names, lambda names: conn_name not in names, within=5)


async def test_exception_in_the_block_propagates_unwrapped(amqp_url: str, resources) -> None:
    """Not wrapped in an ExceptionGroup by connect()'s nursery."""
    with pytest.raises(NotFoundError):
        async with connect(amqp_url) as conn:
            channel = await conn.open_channel()
            await channel.queue_declare(resources.queue("missing"), passive=True)


async def test_cancelled_call_keeps_replies_matched(broker_host_port, resources) -> None:
    """Cancel a task waiting for its DeclareOk; the next call on the channel must get its own
    reply, not the late one."""
    first, second = resources.queue("first"), resources.queue("second")
    async with open_tcp_proxy(*broker_host_port) as proxy, connect(proxy.amqp_url()) as conn:
        channel = await conn.open_channel()
        proxy.stall()
        with trio.move_on_after(0.5) as scope:
            await channel.queue_declare(first)
        assert scope.cancelled_caught
        proxy.resume()
        with trio.fail_after(MUST_HAPPEN):
            ok = await channel.queue_declare(second)
            assert ok.queue == second
            # The cancelled request was on the wire: the broker did declare the queue.
            ok = await channel.queue_declare(first, passive=True)
            assert ok.queue == first
            ok = await channel.queue_declare(second, passive=True)
            assert ok.queue == second
        assert not channel.is_closed


async def test_cancelled_calls_at_random_points(channel: Channel, resources) -> None:
    """Cancel declares at varying points (before sending, while waiting, after the reply
    landed); every following call must still get its own reply."""
    for i in range(30):
        victim, check = resources.queue(f"victim{i}"), resources.queue(f"check{i}")
        scope = trio.CancelScope()

        async def declare(name: str = victim, scope: trio.CancelScope = scope) -> None:
            with scope:
                await channel.queue_declare(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(declare)
            for _ in range(i % 6):
                await trio.lowlevel.checkpoint()
            scope.cancel()
        with trio.fail_after(MUST_HAPPEN):
            ok = await channel.queue_declare(check)
        assert ok.queue == check
        assert ok.message_count == 0
    assert not channel.is_closed
