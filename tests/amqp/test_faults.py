"""Faults after the handshake, injected for real through the TCP proxy."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.support.helpers import MUST_HAPPEN, with_query
from tests.support.proxy import open_tcp_proxy
from trioworker.amqp import Connection, ConnectionLostError, connect

pytestmark = pytest.mark.broker


async def test_silent_peer_is_detected_by_heartbeats(broker_host_port, resources) -> None:
    """heartbeat=1: once nothing arrives for 2 intervals the connection is declared lost."""
    queue = resources.queue()
    async with (
        open_tcp_proxy(*broker_host_port) as proxy,
        connect(with_query(proxy.amqp_url(), heartbeat=1)) as conn,
    ):
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        proxy.stall()
        start = trio.current_time()
        with trio.fail_after(MUST_HAPPEN), pytest.raises(ConnectionLostError) as info:
            await conn.wait_closed()
        elapsed = trio.current_time() - start
        assert 1.0 <= elapsed <= 4.5, f"detected after {elapsed:.1f} s"
        assert "heartbeat" in str(info.value)
        assert conn.is_closed
        assert conn.error is info.value
        # Every later operation raises the same error, without waiting.
        with trio.fail_after(1), pytest.raises(ConnectionLostError):
            await channel.queue_declare(queue, passive=True)
        with trio.fail_after(1), pytest.raises(ConnectionLostError):
            await conn.open_channel()


async def test_pending_operation_fails_when_the_peer_goes_silent(
    broker_host_port, resources
) -> None:
    queue = resources.queue()
    async with (
        open_tcp_proxy(*broker_host_port) as proxy,
        connect(with_query(proxy.amqp_url(), heartbeat=1)) as conn,
    ):
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        consumer = await channel.basic_consume(queue)
        proxy.stall()
        with trio.fail_after(MUST_HAPPEN):
            with pytest.raises(ConnectionLostError):
                await channel.queue_declare(queue, passive=True)  # reply never comes
            with pytest.raises(ConnectionLostError):
                await consumer.__anext__()
        assert channel.is_closed


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
async def test_cut_connection_is_lost(broker_host_port, resources, reset: bool) -> None:
    queue = resources.queue()
    async with open_tcp_proxy(*broker_host_port) as proxy, connect(proxy.amqp_url()) as conn:
        channel = await conn.open_channel()
        await channel.queue_declare(queue)
        consumer = await channel.basic_consume(queue)
        errors: list[BaseException] = []

        async def iterate() -> None:
            try:
                async for _ in consumer:
                    pass
            except ConnectionLostError as exc:
                errors.append(exc)

        with trio.fail_after(MUST_HAPPEN):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(iterate)
                await trio.testing.wait_all_tasks_blocked()
                await proxy.cut(reset=reset)
        assert len(errors) == 1
        await check_lost(conn)


async def check_lost(conn: Connection) -> None:
    assert conn.is_closed
    assert isinstance(conn.error, ConnectionLostError)
    with pytest.raises(ConnectionLostError):
        await conn.wait_closed()
