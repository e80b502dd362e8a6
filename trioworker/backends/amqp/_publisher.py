"""Publishing with confirms and RPC calls on one publishing connection, across reconnects.

The :class:`~._publish_connection.PublishConnection` (publishers have a connection of their
own, apart from the consumers') attaches every connection it opens and detaches it when the
connection ends; a caller that comes while there is none waits for the next one (it is
reconnecting, or — the first caller — opening it). Once it is done (the app stopped),
callers fail with :class:`~trioworker.amqp.ConnectionClosedError` instead of waiting for a
connection that will never come.

A publish the connection loss left unconfirmed is published again on the next connection
(at least once: the broker may have taken the first copy too), within the caller's
timeout; see docs/amqp.md "Publishing". A nacked publish is published again too, on a
fresh channel and with backoff, for up to :data:`NACK_RETRY_FOR` seconds: RabbitMQ nacks
while a queue has no reachable leader, and a channel that first published to a quorum
queue while its leader was being elected keeps nacking every publish to it long after
(measured on 3.10: over a minute; a channel opened later is fine). So a nack retires the
channel it came on. A queue still refusing after that (full, with
``x-overflow=reject-publish``; its node down for good) gets the caller the nack.

Publishing uses one channel per connection, in confirm mode, opened on first use; RPC calls
share one :class:`~trioworker.amqp.RpcClient` (direct reply-to) per connection, also opened
on first use, whose reply reader runs in the connection's nursery.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ...amqp import (
    AMQPConnectionError,
    AMQPError,
    BasicProperties,
    Channel,
    Connection,
    ConnectionClosedError,
    ConnectionLostError,
    PublishNackedError,
    RpcClient,
    open_rpc_client,
)
from ...pipeline._backoff import backoff_delay

__all__ = ["Body", "ConnectionHelper", "HelperStart", "Publisher", "encode_body", "reply_lost"]

#: Seconds a nacked publish is published again (with backoff) before the nack is raised.
NACK_RETRY_FOR = 10.0
#: Longest pause between two publishes of a nacked message.
NACK_RETRY_CAP = 1.0
#: Seconds a retired channel gets for its last confirms, and for its close.
RETIRE_TIMEOUT = 30.0
#: Routing keys of direct reply-to addresses (an RPC reply to ``app.amqp.call`` & co.).
DIRECT_REPLY_PREFIX = "amq.rabbitmq.reply-to."
#: Connection losses after which a reply to a direct reply-to address is given up.
REPLY_LOSSES = 2

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
        #: Held by a direct reply publishing again after a connection loss (see publish).
        self._suspects = trio.Lock()
        #: Per connection: the helpers :meth:`helper` started on it, by key.
        self._helpers: dict[str, ConnectionHelper] = {}
        #: Set by the first caller (or an app with RPC routes): the publishing connection
        #: opens only then; it stays wanted across serves of the app.
        self.wanted = False
        self._wanted = trio.Event()
        #: Publishes sent again on a new connection because the old one died unconfirmed.
        self.republished = 0
        #: Publishes sent again because the broker nacked them (see NACK_RETRY_FOR).
        self.renacked = 0

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
        self._helpers = {}
        self._attached.set()

    def detach(self) -> None:
        """The connection ended: callers wait for the next one."""
        self._connection = None
        self._nursery = None
        self._channel = None
        self._rpc = None
        self._helpers = {}
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
        lost silently — except a reply to a direct reply-to address, given up after
        :data:`REPLY_LOSSES` connections died with it (its caller is gone). A nack is
        retried for :data:`NACK_RETRY_FOR` seconds, then raised
        (:class:`PublishNackedError`). A channel error (say, an unknown exchange) is the
        caller's.
        """
        nacks = _Nacks(exchange, routing_key)
        reply = _is_direct_reply(exchange, routing_key)
        losses = 0
        while True:
            pause = 0.0
            # A reply whose connection died once is a suspect: RabbitMQ (3.10) closes the
            # connection that publishes to a reply-to address on a dead node (541), every
            # time. Suspects go out one at a time, so that such a reply kills the
            # connection under no other reply, and is given up on its second loss.
            async with self._suspects if reply and losses else contextlib.nullcontext():
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
                except PublishNackedError:
                    pause = nacks.pause()  # raises once NACK_RETRY_FOR is over
                    self.renacked += 1
                    self._retire(channel)
                except AMQPConnectionError as exc:
                    if self._ended:
                        raise  # the app stopped: no connection will come
                    losses += 1
                    if reply and losses >= REPLY_LOSSES:
                        raise ConnectionLostError(
                            f"reply given up after {losses} connections died publishing it:"
                            f" its caller is most likely gone (last: {exc}); RabbitMQ closes"
                            " a connection that replies to a caller whose node is down"
                        ) from exc
                    self.republished += 1  # lost unconfirmed: again on the next connection
            await trio.sleep(pause)

    def _retire(self, channel: Channel) -> None:
        """Publish on a new channel from now on; close ``channel`` once the publishes
        still waiting on it have their verdict (in the connection's nursery)."""
        if self._channel is not channel:
            return  # retired already (every publish waiting on it was nacked too)
        self._channel = None
        if self._nursery is not None:
            self._nursery.start_soon(_close_when_settled, channel)

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

    async def helper(self, key: str, start: HelperStart) -> ConnectionHelper:
        """A long-lived helper on the publishing connection, by ``key`` (``app.nameko``'s
        reply consumer): started with ``await nursery.start(start, connection)`` in the
        connection's nursery on first use, and again after a reconnect or once the helper
        says ``is_closed``. A failure to start it is the caller's; once started, its task
        must end quietly with its connection (an exception would end the connection)."""
        while True:
            conn, nursery = await self._connected()
            async with self._rpc_lock:
                if conn is not self._connection:
                    continue
                helper = self._helpers.get(key)
                if helper is None or helper.is_closed:
                    helper = await nursery.start(start, conn)
                    self._helpers[key] = helper
                return helper


class ConnectionHelper(Protocol):
    """What :meth:`Publisher.helper` keeps: an object that says when it is done."""

    @property
    def is_closed(self) -> bool: ...


#: ``async def start(connection, *, task_status)``: run a helper, reporting it started.
HelperStart = Callable[..., Awaitable[None]]


def reply_lost(queue: str, client: RpcClient, error: AMQPConnectionError) -> ConnectionLostError:
    """The error of a call whose connection died before its reply came (a node killed, a
    network cut): the reply can never come, since direct reply-to delivers only to the
    channel that sent the request. The call is not sent again — it may not be idempotent,
    and the request may already have been handled."""
    params = client.channel.connection.params
    return ConnectionLostError(
        f"app.amqp.call({queue!r}): the connection to {params.host}:{params.port} was lost "
        f"while the call waited for its reply, which can no longer come ({error}); the "
        "request may have been handled: call again if that is safe"
    )


class _Nacks:
    """The nacks of one publish: how long to wait before the next try, until
    :data:`NACK_RETRY_FOR` seconds of them, then the error."""

    def __init__(self, exchange: str, routing_key: str) -> None:
        self._where = f"{exchange!r}/{routing_key!r}"
        self._first: float | None = None
        self._count = 0

    def pause(self) -> float:
        now = trio.current_time()
        self._first = now if self._first is None else self._first
        self._count += 1
        if now - self._first >= NACK_RETRY_FOR:
            raise PublishNackedError(
                f"the broker nacked the publish to {self._where} {self._count} times in "
                f"{now - self._first:.1f} s: the queue cannot take it (full, with "
                "x-overflow=reject-publish, or without a reachable leader); the broker "
                "did not take responsibility for it"
            )
        return backoff_delay(self._count - 1, cap=NACK_RETRY_CAP)


def _is_direct_reply(exchange: str, routing_key: str) -> bool:
    return exchange == "" and routing_key.startswith(DIRECT_REPLY_PREFIX)


async def _close_when_settled(channel: Channel) -> None:
    with trio.move_on_after(RETIRE_TIMEOUT), contextlib.suppress(AMQPError):
        await channel.wait_for_confirms(0)
    with trio.move_on_after(RETIRE_TIMEOUT), contextlib.suppress(AMQPError):
        await channel.close()


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
