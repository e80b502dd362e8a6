"""What ``app.nameko`` keeps on the publishing connection: the reply consumer of its calls,
and the exchanges its dispatches need declared.

Both are helpers of the publishing connection (``app.amqp.connection_helper``): started on
first use, in that connection's nursery, and again on the next connection after a
reconnect. They live there rather than in a consume route because a route stops consuming
first at shutdown, while handlers finishing in their grace period may still be waiting for
the reply of a call; the publishing connection stays open until the very end.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ...amqp import AMQPError, Channel, Connection, Consumer, Delivery
from ..amqp import Binding, Exchange, Queue
from ..amqp._declare import declare_topology
from ._wire import REPLY_QUEUE_TTL_MS, RPC_EXCHANGE

__all__ = ["Declarer", "ReplyConsumer", "reply_queue", "serve_declarer", "serve_replies"]


def reply_queue(name: str, routing_key: str) -> Queue:
    """A caller's reply queue as Nameko's ``ReplyListener`` declares it: kombu's defaults
    (durable, not exclusive, not auto-delete) with ``x-expires``, bound to ``nameko-rpc``
    with the caller's uuid — the ``reply_to`` of its requests."""
    return Queue(
        name,
        durable=True,
        arguments={"x-expires": REPLY_QUEUE_TTL_MS},
        bindings=[Binding(RPC_EXCHANGE, routing_key)],
    )


class ReplyConsumer:
    """The reply queue's consumer on one publishing connection (no-ack, callback mode:
    each reply is handed to the waiting call from the connection's reader)."""

    def __init__(self, channel: Channel, consumer: Consumer) -> None:
        self._channel = channel
        self._consumer = consumer
        self._done = trio.Event()

    @property
    def is_closed(self) -> bool:
        """Done: the channel closed or the broker cancelled the consumer (the queue was
        deleted); the next call starts another."""
        return self._done.is_set() or self._channel.is_closed or not self._consumer.active

    async def serve(self) -> None:
        """Until the consumer ends (raising why, unless we cancelled it)."""
        try:
            await self._consumer.wait_ended()
        finally:
            self._done.set()

    async def wait_closed(self) -> None:
        """Wait until this consumer is done (its connection lost, say): calls still waiting
        then consume their queue again on the next connection."""
        await self._done.wait()


async def serve_replies(
    connection: Connection,
    *,
    queue: Queue,
    on_reply: Callable[[Delivery], None],
    task_status: trio.TaskStatus[ReplyConsumer],
) -> None:
    """Declare the reply queue, consume it until the consumer or its channel ends.

    No acknowledgements: a reply is worth something only to a caller still waiting, and
    one lost with its connection is one that caller stops waiting for at its timeout.
    """
    started = False
    try:
        async with connection.channel() as channel:
            await declare_topology(channel, queue, connection.params.virtual_host)
            consumer = await channel.basic_consume(queue.name, no_ack=True, on_delivery=on_reply)
            helper = ReplyConsumer(channel, consumer)
            task_status.started(helper)
            started = True
            await helper.serve()
    except AMQPError:
        if not started:
            raise  # the caller's: it could not consume its replies


class Declarer:
    """Declares the exchanges dispatches go to, once per exchange per connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._declared: set[str] = set()

    @property
    def is_closed(self) -> bool:
        """Done with its connection."""
        return self._connection.is_closed

    async def declare(self, exchange: Exchange) -> None:
        """Declare ``exchange`` (as Nameko's ``EventDispatcher`` does before publishing: a
        publish to a missing exchange would close the publishing channel) on a channel of
        its own, so a refusal (406: it exists with other settings) is this caller's error
        and nobody else's."""
        if exchange.name in self._declared:
            return
        async with self._connection.channel() as channel:
            await channel.exchange_declare(
                exchange.name,
                exchange.type,
                durable=exchange.durable,
                auto_delete=exchange.auto_delete,
            )
        self._declared.add(exchange.name)


async def serve_declarer(connection: Connection, *, task_status: trio.TaskStatus[Declarer]) -> None:
    """Keep a :class:`Declarer` for as long as its connection lives."""
    task_status.started(Declarer(connection))
    try:
        await connection.wait_closed()
    except AMQPError:
        pass  # the connection's end is the supervisor's business
