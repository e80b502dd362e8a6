"""The test client's own AMQP connection: what the test publishes, calls and reads with.

It is the real :mod:`trioworker.amqp` client on a connection apart from the app's, so it
works the same on the memory broker and on RabbitMQ, and the app sees the test's messages
come from the broker like any other. Opened on first use: a test of an HTTP-only app never
opens it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..amqp import AMQPError, Channel, Connection, RpcClient, connect, open_rpc_client

__all__ = ["CLIENT_CONNECTION_NAME", "ClientConnection"]

#: How the connection shows in the broker's list (``rabbitmqctl list_connections``).
CLIENT_CONNECTION_NAME = "trioworker-testclient"


class ClientConnection:
    """One connection, its confirm channel and its RPC client, held by tasks in the
    client's nursery until :meth:`close`."""

    def __init__(self, url: str, nursery: trio.Nursery) -> None:
        self._url = url
        self._nursery = nursery
        self._lock = trio.Lock()
        self._channel_lock = trio.Lock()
        self._closing = trio.Event()
        self._connection: Connection | None = None
        self._channel: Channel | None = None
        self._rpc: RpcClient | None = None

    async def connection(self) -> Connection:
        """The open connection (opened now if it is not)."""
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                if self._closing.is_set():
                    raise RuntimeError("the TestClient is closed")
                self._connection = await self._nursery.start(self._hold_connection)
            return self._connection

    async def publish_channel(self) -> Channel:
        """A channel in confirm mode (one, reused; reopened if the broker closed it, as it
        does after a publish to an exchange that does not exist)."""
        async with self._channel_lock:  # concurrent publishes share one channel
            if self._channel is None or self._channel.is_closed:
                conn = await self.connection()
                channel = await conn.open_channel()
                await channel.confirm_select()
                self._channel = channel
            return self._channel

    async def rpc_client(self) -> RpcClient:
        """The RPC client (direct reply-to), on a channel of its own."""
        async with self._channel_lock:
            if self._rpc is None or self._rpc.channel.is_closed:
                conn = await self.connection()
                self._rpc = await self._nursery.start(self._hold_rpc, conn)
            return self._rpc

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """A fresh channel for the block, closed after it (a queue's messages read without
        an ack go back to the queue then)."""
        conn = await self.connection()
        async with conn.channel() as channel:
            yield channel

    def close(self) -> None:
        """Let the connection's tasks end (the connection closes politely)."""
        self._closing.set()

    async def _hold_connection(self, task_status: trio.TaskStatus[Connection]) -> None:
        async with connect(self._url, connection_name=CLIENT_CONNECTION_NAME) as conn:
            task_status.started(conn)
            with trio.CancelScope() as scope:
                self._nursery.start_soon(_cancel_when, self._closing, scope)
                # Lost (the broker closed it): the next use raises why, not this task.
                with contextlib.suppress(AMQPError):
                    await conn.wait_closed()

    async def _hold_rpc(self, conn: Connection, task_status: trio.TaskStatus[RpcClient]) -> None:
        async with open_rpc_client(conn) as rpc:
            task_status.started(rpc)
            with trio.CancelScope() as scope:
                self._nursery.start_soon(_cancel_when, self._closing, scope)
                with contextlib.suppress(AMQPError):
                    await rpc.channel.wait_closed()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
