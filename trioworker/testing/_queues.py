"""``client.queue(name)``: what a queue holds, on either broker.

The memory broker can show a queue as it is, at no cost and without touching it:
``.messages`` is a live list, and the broker counts what happened to the queue's messages
(acked, rejected, requeued, dead-lettered, expired). A real RabbitMQ can only be *read*:
:meth:`QueueInspector.fetch` takes every ready message with ``basic.get`` (no ack) and then
closes its channel, so the broker puts them all back — marked ``redelivered``, as RabbitMQ
marks every message that went back to its queue. The counts are the broker's own and AMQP
has no way to ask for them, so on RabbitMQ they raise :class:`NeedsMemoryBroker`.

``await client.queue(name).fetch()`` works on both, which is what a suite that runs against
both brokers (docs/testing.md, "Parity") uses; ``.messages`` is the memory broker's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ..amqp import BasicProperties, Channel, Delivery, NotFoundError

if TYPE_CHECKING:
    from ._broker import MemoryBroker

__all__ = [
    "FetchedMessage",
    "NeedsMemoryBroker",
    "QueueInspector",
    "QueuedMessage",
]


class NeedsMemoryBroker(NotImplementedError):
    """What was asked can only be observed on the memory broker (``TestClient(app)``)."""


class QueuedMessage(Protocol):
    """A message as a queue holds it: the memory broker's ``StoredMessage`` and
    :class:`FetchedMessage` both have this shape."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, Any]: ...

    @property
    def properties(self) -> BasicProperties: ...

    @property
    def exchange(self) -> str: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def redelivered(self) -> bool: ...

    def json(self) -> Any: ...


class FetchedMessage:
    """A message read from a real RabbitMQ queue (and left in it)."""

    __slots__ = ("_delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def __repr__(self) -> str:
        return f"<FetchedMessage routing_key={self.routing_key!r} body={self.body[:60]!r}>"

    @property
    def body(self) -> bytes:
        return self._delivery.body

    @property
    def properties(self) -> BasicProperties:
        return self._delivery.properties

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self._delivery.properties.headers or {})

    @property
    def exchange(self) -> str:
        return self._delivery.exchange

    @property
    def routing_key(self) -> str:
        return self._delivery.routing_key

    @property
    def redelivered(self) -> bool:
        return self._delivery.redelivered

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self._delivery.body)


#: How a real-broker inspector gets a channel of the client's connection (closed after).
ChannelFactory = Callable[[], AbstractAsyncContextManager[Channel]]


class QueueInspector:
    """One queue of the broker the app runs on: ``client.queue(name)``.

    Reading is lazy: a queue that does not exist yet (the app declares it when it starts,
    or on first use) can be named before; reading a missing one raises ``KeyError``.
    """

    __test__ = False

    def __init__(
        self,
        name: str,
        *,
        vhost: str = "/",
        memory: MemoryBroker | None = None,
        channel: ChannelFactory | None = None,
    ) -> None:
        if (memory is None) == (channel is None):
            raise TypeError("a QueueInspector reads either a memory broker or a channel")
        self.name = name
        self.vhost = vhost
        self._memory = memory
        self._channel = channel

    def __repr__(self) -> str:
        where = "memory" if self._memory is not None else "rabbitmq"
        return f"<QueueInspector {self.name!r} on {where}>"

    def _view(self, what: str) -> Any:
        if self._memory is None:
            raise NeedsMemoryBroker(
                f"client.queue({self.name!r}).{what} needs the memory broker "
                "(TestClient(app) without broker=): RabbitMQ does not tell a client how a "
                "queue's messages were settled. On RabbitMQ, use "
                f"`await client.queue({self.name!r}).fetch()` to read what the queue holds."
            )
        return self._memory.queue(self.name, vhost=self.vhost)

    # -------------------------------------------------------------- contents

    @property
    def messages(self) -> Sequence[QueuedMessage]:
        """The ready messages, in queue order (not those delivered and unacknowledged)."""
        messages: Sequence[QueuedMessage] = self._view("messages").messages
        return messages

    async def fetch(self) -> list[QueuedMessage]:
        """The ready messages, in queue order, on either broker; they stay in the queue.

        On RabbitMQ each is taken with ``basic.get`` and put back by closing the channel:
        from then on RabbitMQ marks them ``redelivered``. A queue the app consumes is read
        while the app competes for it: read the queues nothing consumes (outputs,
        dead-letter queues), or ``drain()`` first.
        """
        if self._channel is None:
            return list(self.messages)
        fetched: list[QueuedMessage] = []
        async with self._channel() as channel:
            try:
                while (delivery := await channel.basic_get(self.name, no_ack=False)) is not None:
                    fetched.append(FetchedMessage(delivery))
            except NotFoundError:
                raise KeyError(
                    f"no queue {self.name!r} in vhost {self.vhost!r} on the broker"
                ) from None
        return fetched

    async def count(self) -> int:
        """How many messages are ready (on either broker)."""
        if self._channel is None:
            return len(self.messages)
        async with self._channel() as channel:
            try:
                reply = await channel.queue_declare(self.name, passive=True)
            except NotFoundError:
                raise KeyError(
                    f"no queue {self.name!r} in vhost {self.vhost!r} on the broker"
                ) from None
        return reply.message_count or 0

    # ---------------------------------------------------------------- counts

    @property
    def unacked(self) -> Sequence[QueuedMessage]:
        """Messages delivered to a consumer and not settled yet (memory broker)."""
        unacked: Sequence[QueuedMessage] = self._view("unacked").unacked
        return unacked

    @property
    def acked(self) -> int:
        """Deliveries acknowledged since the queue was declared (memory broker)."""
        return int(self._view("acked").acked)

    @property
    def rejected(self) -> int:
        """Deliveries rejected without requeue (memory broker)."""
        return int(self._view("rejected").rejected)

    @property
    def requeued(self) -> int:
        """Deliveries rejected or nacked back into the queue (memory broker)."""
        return int(self._view("requeued").requeued)

    @property
    def dead_lettered(self) -> int:
        """Messages the *broker* dead-lettered out of this queue (rejected, expired,
        over ``x-max-length``) — not the copies a route's ``retry=`` publishes to its
        ``.dlq`` itself (look in that queue's messages). Memory broker."""
        return int(self._view("dead_lettered").dead_lettered)

    @property
    def expired(self) -> int:
        """Messages whose TTL ran out in this queue (memory broker)."""
        return int(self._view("expired").expired)

    @property
    def consumers(self) -> int:
        """Consumers of the queue now (memory broker)."""
        return int(self._view("consumers").consumers)
