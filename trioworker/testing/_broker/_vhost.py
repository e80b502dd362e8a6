"""A virtual host: its exchanges, queues and bindings, and the operations on them.

This is the broker's core, free of I/O: the connection layer calls these methods with the
decoded request and the connection it came from (``owner``, for exclusive queues), and
they either succeed or raise the :class:`~._errors.ChannelError` RabbitMQ would answer
with. Time comes from the broker's clock (``clock``); ``schedule`` tells the broker's
timer that something expires at a given time.

Publishing and dead-lettering (the two ways a message enters queues) live in
:mod:`._routing`, which this class builds on.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from typing import Any

from ._arguments import queue_settings
from ._equivalence import assert_equivalent
from ._errors import (
    COMMAND_INVALID,
    ConnectionError,
    access_refused,
    not_found,
    not_implemented,
    precondition_failed,
    resource,
    resource_locked,
)
from ._exchange import EXCHANGE_TYPES, Exchange
from ._matching import check_x_match
from ._queue import Queue
from ._routing import Routing

__all__ = ["REPLY_TO", "VHost"]

#: RabbitMQ's direct reply-to pseudo-queue.
REPLY_TO = "amq.rabbitmq.reply-to"

#: What every vhost has from the start (RabbitMQ's pre-declared exchanges).
_PREDECLARED = (
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)


def _generated_name() -> str:
    """A server-named queue: ``amq.gen-`` and 22 URL-safe base64 characters."""
    return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class VHost(Routing):
    """One vhost's topology (exchanges, queues, bindings) and its rules."""

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        schedule: Callable[[float], None],
    ) -> None:
        super().__init__(name, clock=clock, wall_clock=wall_clock, schedule=schedule)
        self.exchanges[""] = Exchange("", "direct")
        for exchange, kind, internal in _PREDECLARED:
            self.exchanges[exchange] = Exchange(exchange, kind, internal=internal)

    # --------------------------------------------------------------- exchanges

    def declare_exchange(
        self,
        name: str,
        kind: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Exchange:
        """``Exchange.Declare``: create, or check an existing one is equivalent."""
        if passive:
            exchange = self.exchanges.get(name)
            if exchange is None:
                raise not_found("exchange", name, self.name)
            return exchange
        if kind not in EXCHANGE_TYPES:
            # RabbitMQ's words depend on whether the name is an Erlang atom it knows: a
            # plugin's type it lacks (x-delayed-message, ...) is "unknown", others "invalid".
            word = "unknown" if kind.startswith("x-") else "invalid"
            raise ConnectionError(COMMAND_INVALID, f"{word} exchange type '{kind}'")
        if name == "":
            raise access_refused("operation not permitted on the default exchange")
        arguments = dict(arguments or {})
        exchange = self.exchanges.get(name)
        if exchange is None:
            if name.startswith("amq."):
                raise access_refused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
            for key in arguments:
                raise not_implemented(f"the exchange argument {key!r}")
            exchange = Exchange(
                name,
                kind,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=arguments,
            )
            self.exchanges[name] = exchange
            return exchange
        assert_equivalent(
            "exchange",
            name,
            self.name,
            {
                "type": (exchange.type, kind),
                "durable": (exchange.durable, durable),
                "auto_delete": (exchange.auto_delete, auto_delete),
                "internal": (exchange.internal, internal),
            },
            exchange.arguments,
            arguments,
            keys=("alternate-exchange",),
        )
        return exchange

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """``Exchange.Delete`` (a missing exchange is fine, as in RabbitMQ)."""
        if name == "":
            raise access_refused("operation not permitted on the default exchange")
        exchange = self.exchanges.get(name)
        if exchange is None:
            return
        if name.startswith("amq."):
            raise access_refused(
                f"deletion of system {resource('exchange', name, self.name)} not allowed"
            )
        if if_unused and exchange.bindings:
            raise precondition_failed(f"{resource('exchange', name, self.name)} in use")
        del self.exchanges[name]

    # ------------------------------------------------------------------ queues

    def declare_queue(
        self,
        name: str,
        *,
        owner: object,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Queue:
        """``Queue.Declare``: create, or check an existing one is equivalent."""
        if passive:
            found = self.find_queue(name, owner)
            found.touch()
            return found
        if name == "":
            name = _generated_name()
        elif name.startswith("amq."):
            raise access_refused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        arguments = dict(arguments or {})
        queue = self.queues.get(name)
        if queue is not None:
            if (
                (queue.owner is not None and queue.owner is not owner)
                or (queue.owner is None and exclusive)
                or (queue.owner is not None and not exclusive)
            ):
                raise resource_locked(name, self.name)
            assert_equivalent(
                "queue",
                name,
                self.name,
                {
                    "durable": (queue.durable, durable),
                    "auto_delete": (queue.auto_delete, auto_delete),
                },
                queue.arguments,
                arguments,
            )
            queue.touch()
            return queue
        settings = queue_settings(
            name,
            self.name,
            arguments,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
        )
        queue = Queue(
            self,
            name,
            self.name,
            durable=durable,
            auto_delete=auto_delete,
            owner=owner if exclusive else None,
            arguments=arguments,
            settings=settings,
        )
        self.queues[name] = queue
        queue.touch()
        return queue

    def find_queue(self, name: str, owner: object) -> Queue:
        """The queue ``name``: 404 if missing, 405 if exclusive to another connection."""
        queue = self.queues.get(name)
        if queue is None:
            if name == REPLY_TO or name.startswith(REPLY_TO + "."):
                raise not_implemented(f"{REPLY_TO} except through basic.consume")
            raise not_found("queue", name, self.name)
        if queue.owner is not None and queue.owner is not owner:
            raise resource_locked(name, self.name)
        return queue

    def delete_queue(
        self, name: str, *, owner: object, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """``Queue.Delete``: how many ready messages went with it (0 if it was missing)."""
        if name not in self.queues:
            return 0
        queue = self.find_queue(name, owner)
        if if_unused and queue.consumers:
            raise precondition_failed(f"{resource('queue', name, self.name)} in use")
        if if_empty and queue.ready:
            raise precondition_failed(f"{resource('queue', name, self.name)} not empty")
        count = len(queue.ready)
        self.remove_queue(queue)
        return count

    def remove_queue(self, queue: Queue) -> None:
        """Delete ``queue`` unconditionally: bindings, then consumers (cancelled)."""
        if self.queues.get(queue.name) is queue:
            del self.queues[queue.name]
        for exchange in list(self.exchanges.values()):
            if exchange.unbind_queue(queue):
                self._auto_delete_exchange(exchange)
        for consumer in queue.mark_deleted():
            consumer.queue_deleted(queue)

    def purge_queue(self, name: str, *, owner: object) -> int:
        """``Queue.Purge``: drop the ready messages; how many."""
        return self.find_queue(name, owner).purge()

    def owner_gone(self, owner: object) -> None:
        """A connection closed: its exclusive queues go with it."""
        for queue in [q for q in self.queues.values() if q.owner is owner]:
            self.remove_queue(queue)

    def auto_delete(self, queue: Queue) -> None:
        """The queue's last consumer left and it is ``auto_delete``."""
        self.remove_queue(queue)

    # ---------------------------------------------------------------- bindings

    def _binding_ends(self, queue: str, exchange: str, owner: object) -> tuple[Queue, Exchange]:
        if exchange == "":
            raise access_refused("operation not permitted on the default exchange")
        target = self.exchanges.get(exchange)
        if target is None:  # RabbitMQ names the missing exchange first
            raise not_found("exchange", exchange, self.name)
        return self.find_queue(queue, owner), target

    def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None,
        *,
        owner: object,
    ) -> None:
        """``Queue.Bind``."""
        found, target = self._binding_ends(queue, exchange, owner)
        arguments = dict(arguments or {})
        if target.type == "headers":
            check_x_match(arguments)
        target.bind(found, routing_key, arguments)

    def unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None,
        *,
        owner: object,
    ) -> None:
        """``Queue.Unbind`` (a binding that does not exist is fine, as in RabbitMQ)."""
        found, target = self._binding_ends(queue, exchange, owner)
        if target.unbind(found, routing_key, dict(arguments or {})):
            self._auto_delete_exchange(target)

    def _auto_delete_exchange(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name in self.exchanges:
            del self.exchanges[exchange.name]

    # ------------------------------------------------------------------- timer

    def expire_due(self, now: float) -> None:
        """Expire what is due at ``now``: messages at queue heads, unused queues."""
        for queue in list(self.queues.values()):
            queue.expire(now)
            if queue.unused_expired(now):
                self.remove_queue(queue)

    def deadline(self) -> float | None:
        """The earliest time something in this vhost expires by itself."""
        deadlines = [d for q in self.queues.values() if (d := q.deadline()) is not None]
        return min(deadlines, default=None)
