"""Publishing with confirms and RPC calls on one publishing connection, across reconnects.

The :class:`~._publish_connection.PublishConnection` (publishers have a connection of their
own, apart from the consumers') attaches every connection it opens and detaches it when the
connection ends; a caller that comes while there is none waits for the next one (it is
reconnecting, or — the first caller — opening it). Once it is done (the app stopped),
callers fail with :class:`~trioworker.amqp.ConnectionClosedError` instead of waiting for a
connection that will never come.

A publish the connection loss left unconfirmed is published again on the next connection
(at least once: the broker may have taken the first copy too), within the caller's
timeout; see docs/amqp.md "Publishing".

Publishing uses one channel per connection, in confirm mode, opened on first use; RPC calls
share one :class:`~trioworker.amqp.RpcClient` (direct reply-to) per connection, also opened
on first use, whose reply reader runs in the connection's nursery.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from ...amqp import (
    AMQPConnectionError,
    AMQPError,
    BasicProperties,
    Channel,
    Connection,
    ConnectionClosedError,
    RpcClient,
    open_rpc_client,
)

__all__ = ["Body", "Publisher", "encode_body"]

#: What ``app.amqp.publish`` takes as a body.
Body = bytes | str | dict[str, Any] | list[Any]


def encode_body(
    body: Body, properties: BasicProperties | None
) -> tuple[bytes, BasicProperties | None]:
    """``str`` → UTF-8; ``dict``/``list`` → JSON, with ``content_type`` application/json
    unless ``properties`` are given."""
    if isinstance(body, dict | list):
        encoded = json.dumps(body).encode()
        if properties is None:
            properties = BasicProperties(content_type="application/json")
        return encoded, properties
    if isinstance(body, str):
        return body.encode(), properties
    return body, properties


class Publisher:
    """The publishing channel and the RPC client of one supervised connection."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._connection: Connection | None = None
        self._nursery: trio.Nursery | None = None
        self._attached = trio.Event()
        self._ended = False
        self._channel: Channel | None = None
        self._channel_lock = trio.Lock()
        self._rpc: RpcClient | None = None
        self._rpc_lock = trio.Lock()
        #: Set by the first caller (or an app with RPC routes): the publishing connection
        #: opens only then; it stays wanted across serves of the app.
        self.wanted = False
        self._wanted = trio.Event()
        #: Publishes sent again on a new connection because the old one died unconfirmed.
        self.republished = 0

    @property
    def connection(self) -> Connection | None:
        """The publishing connection, while one is attached."""
        return self._connection

    def want(self) -> None:
        """Ask for the publishing connection (it opens lazily, on the first caller)."""
        if not self.wanted:
            self.wanted = True
            self._wanted.set()

    async def wait_wanted(self) -> None:
        """Wait until someone asked for the connection (see :meth:`want`)."""
        await self._wanted.wait()

    # ------------------------------------------------- driven by the supervisor

    def attach(self, connection: Connection, nursery: trio.Nursery) -> None:
        """A new connection is open; ``nursery`` lives as long as it (the RPC replies)."""
        self._connection = connection
        self._nursery = nursery
        self._channel = None
        self._rpc = None
        self._attached.set()

    def detach(self) -> None:
        """The connection ended: callers wait for the next one."""
        self._connection = None
        self._nursery = None
        self._channel = None
        self._rpc = None
        if self._attached.is_set():
            self._attached = trio.Event()

    def end(self) -> None:
        """No connection will come any more (the app stopped): fail the callers waiting."""
        self.detach()
        self._ended = True
        self._attached.set()

    def reset(self) -> None:
        """Ready for another serve of the app."""
        self.detach()
        self._ended = False
        self._attached = trio.Event()
        self._wanted = trio.Event()
        if self.wanted:
            self._wanted.set()

    # --------------------------------------------------------------- callers

    async def _connected(self) -> tuple[Connection, trio.Nursery]:
        if not self.wanted:
            self.want()
        while True:
            if self._ended:
                raise ConnectionClosedError(
                    200, f"AMQP connection {self._name!r} is stopped: the app stopped", False
                )
            conn, nursery = self._connection, self._nursery
            if conn is not None and nursery is not None:
                if not conn.is_closed:
                    return conn, nursery
                self.detach()  # lost: the supervisor's detach is on its way
            await self._attached.wait()

    async def channel(self) -> Channel:
        """The connection's publishing channel (confirm mode), opened on first use."""
        while True:
            conn, _ = await self._connected()
            async with self._channel_lock:
                if conn is not self._connection:
                    continue  # reconnected meanwhile
                channel = self._channel
                if channel is None or channel.is_closed:
                    channel = await conn.open_channel()
                    await channel.confirm_select()
                    self._channel = channel
                return channel

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str,
        properties: BasicProperties | None,
        mandatory: bool,
    ) -> None:
        """Publish and wait for the broker's confirm (see ``AMQPBackend.publish``).

        If the connection dies before the confirm came, the message is published again on
        the next connection (the caller's timeout bounds the wait): at least once, never
        lost silently. A channel error (say, an unknown exchange) is the caller's.
        """
        while True:
            try:
                channel = await self.channel()
            except AMQPConnectionError:
                if self._ended:
                    raise  # the app stopped: no connection will come
                continue  # lost while opening the channel: nothing sent yet
            try:
                await channel.basic_publish(
                    body,
                    routing_key=routing_key,
                    exchange=exchange,
                    properties=properties,
                    mandatory=mandatory,
                )
                return
            except AMQPConnectionError:
                if self._ended:
                    raise  # the app stopped: no connection will come
                self.republished += 1  # lost unconfirmed: again on the next connection

    async def rpc_client(self) -> RpcClient:
        """The connection's RPC client (direct reply-to), started on first use."""
        while True:
            conn, nursery = await self._connected()
            async with self._rpc_lock:
                if conn is not self._connection:
                    continue
                client = self._rpc
                if client is None or client.channel.is_closed:
                    client = await nursery.start(_serve_rpc_client, conn)
                    self._rpc = client
                return client


async def _serve_rpc_client(
    connection: Connection, *, task_status: trio.TaskStatus[RpcClient]
) -> None:
    """Run an RPC client on its own channel until that channel closes.

    A failure to open it is the caller's (``nursery.start`` raises it); once it runs, its
    channel closing — broker, connection loss — only ends it: the next call opens another.
    """
    started = False
    try:
        async with open_rpc_client(connection) as client:
            task_status.started(client)
            started = True
            await client.channel.wait_closed()
    except AMQPError:
        if not started:
            raise
