"""A channel's synchronous methods: declare, bind, purge, delete, qos — one request at a time.

AMQP lets a channel have one synchronous request outstanding, and the broker answers in
order; :meth:`ChannelMethods._call` turns that rule into an ``await`` behind the channel's
lock. :class:`~._channel.Channel` builds on it with consuming, publishing and acks.

Cancellation: cancelling a task that waits for a reply abandons the wait, not the request
(it is already on the wire). The channel remembers the reply is still due and lets it land
before sending the next request, so replies never get matched to the wrong request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
from pamqp import base, commands

from ._link import ConnectionLink
from .protocol import AMQPConnection, AMQPError, Delivery, LocalProtocolError


class _Reply:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: base.Frame | Delivery | None = None
        self.error: BaseException | None = None


class ChannelMethods:
    """The request/reply half of a channel; see :class:`~._channel.Channel`."""

    def __init__(self, connection: ConnectionLink, core: AMQPConnection, number: int) -> None:
        #: The connection the channel runs on.
        self.connection = connection
        self.number = number
        self._core = core
        self._error: AMQPError | None = None
        self._lock = trio.Lock()
        self._reply: _Reply | None = None

    def _raise_if_closed(self) -> None:
        if self._error is not None:
            raise self._error

    def _land_reply(self, method: base.Frame | Delivery) -> None:
        """The reply to the outstanding request arrived: wake its caller (if still there)."""
        reply = self._reply
        if reply is None:  # the core already checked the reply was expected
            return
        self._reply = None
        reply.value = method
        reply.event.set()

    def _fail_reply(self, error: AMQPError) -> None:
        """The channel died: the outstanding request gets ``error`` instead of a reply."""
        reply = self._reply
        self._reply = None
        if reply is not None:
            reply.error = error
            reply.event.set()

    async def _call(self, method: base.Frame) -> Any:
        """Send a method; if it is synchronous, wait for and return its reply."""
        async with self._lock:
            stale = self._reply
            if stale is not None:  # a cancelled caller's reply is still due: let it land
                await stale.event.wait()
            self._raise_if_closed()
            try:
                expects_reply = self._core.send_method(self.number, method)
            except LocalProtocolError:
                self.connection.raise_if_closed()
                raise
            self.connection.wake_writer()
            if not expects_reply:
                await trio.lowlevel.checkpoint()
                return None
            reply = self._reply = _Reply()
            await reply.event.wait()
            if reply.error is not None:
                raise reply.error
            return reply.value

    # ------------------------------------------------------------ exchanges

    async def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare an exchange (``passive`` only checks it exists: 404 if not)."""
        await self._call(
            commands.Exchange.Declare(
                exchange=exchange,
                exchange_type=exchange_type,
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=dict(arguments or {}),
            )
        )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        """Delete an exchange."""
        await self._call(commands.Exchange.Delete(exchange=exchange, if_unused=if_unused))

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind exchange ``destination`` to ``source`` (RabbitMQ extension)."""
        await self._call(
            commands.Exchange.Bind(
                destination=destination,
                source=source,
                routing_key=routing_key,
                arguments=dict(arguments or {}),
            )
        )

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove an exchange-to-exchange binding."""
        await self._call(
            commands.Exchange.Unbind(
                destination=destination,
                source=source,
                routing_key=routing_key,
                arguments=dict(arguments or {}),
            )
        )

    # --------------------------------------------------------------- queues

    async def queue_declare(
        self,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> commands.Queue.DeclareOk:
        """Declare a queue; the reply has ``queue``, ``message_count``, ``consumer_count``.

        ``arguments`` carries RabbitMQ's queue arguments: ``x-queue-type`` ("quorum",
        "stream"), ``x-dead-letter-exchange``, ``x-message-ttl``, ``x-max-length``, ...
        ``passive=True`` only checks the queue exists (:class:`NotFoundError` if not).
        """
        reply: commands.Queue.DeclareOk = await self._call(
            commands.Queue.Declare(
                queue=queue,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=dict(arguments or {}),
            )
        )
        return reply

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        await self._call(
            commands.Queue.Bind(
                queue=queue,
                exchange=exchange,
                routing_key=routing_key,
                arguments=dict(arguments or {}),
            )
        )

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        await self._call(
            commands.Queue.Unbind(
                queue=queue,
                exchange=exchange,
                routing_key=routing_key,
                arguments=dict(arguments or {}),
            )
        )

    async def queue_purge(self, queue: str) -> int:
        """Remove every ready message from ``queue``; return how many."""
        reply: commands.Queue.PurgeOk = await self._call(commands.Queue.Purge(queue=queue))
        return reply.message_count or 0

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete ``queue``; return how many messages it held."""
        reply: commands.Queue.DeleteOk = await self._call(
            commands.Queue.Delete(queue=queue, if_unused=if_unused, if_empty=if_empty)
        )
        return reply.message_count or 0

    # ---------------------------------------------------------------- basic

    async def basic_qos(
        self, prefetch_count: int = 0, *, prefetch_size: int = 0, global_: bool = False
    ) -> None:
        """Limit unacknowledged deliveries (per consumer, or per channel with ``global_``)."""
        await self._call(
            commands.Basic.Qos(
                prefetch_size=prefetch_size, prefetch_count=prefetch_count, global_=global_
            )
        )

    async def basic_recover(self, requeue: bool = True) -> None:
        """Ask the broker to redeliver every unacknowledged message of this channel."""
        await self._call(commands.Basic.Recover(requeue=requeue))

    async def basic_get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """Fetch one message synchronously; ``None`` if the queue is empty."""
        reply = await self._call(commands.Basic.Get(queue=queue, no_ack=no_ack))
        return reply if isinstance(reply, Delivery) else None
