"""Setting up what a route consumes: declare its topology, or check that it exists.

``declare=True``: the exchanges of the queue's bindings, its dead-letter queue (first, so a
message dead-lettered the moment the queue exists has somewhere to go), the queue with
:meth:`Queue.declare_arguments`, then its bindings. Every declare is idempotent, so this
runs again on every (re)connect. ``declare=False``: a passive ``Queue.Declare`` — it
creates nothing and says nothing about arguments, only whether the queue is there.

Two failures need words, not a retry loop:

- a missing queue (404) is retried by the route, logged once per change of state;
- an existing queue or exchange with other arguments (406 *inequivalent arg*) will never
  fix itself — RabbitMQ does not change an existing queue's arguments — so it becomes a
  :class:`TopologyConflict` naming the argument (RabbitMQ's reply text is the only place
  that says which one: a passive declare returns no arguments).
"""

from __future__ import annotations

import logging
import re

from ...amqp import Channel, NotFoundError, PreconditionFailedError
from ._topology import Exchange, Queue

__all__ = ["MissingQueue", "QueueStateLog", "TopologyConflict", "prepare_queue"]

log = logging.getLogger("trioworker.amqp")

# RabbitMQ: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost
# '/': received the value 'quorum' of type 'longstr' but current is none"
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']*)' for (?P<kind>queue|exchange) '(?P<name>[^']*)'"
    r" in vhost '(?P<vhost>[^']*)': (?P<detail>.*)$"
)


class TopologyConflict(Exception):
    """A queue or exchange exists with other arguments than the route declares (406).

    Permanent: retrying cannot help, so the route stops declaring it and reports it.
    """

    def __init__(self, message: str, *, argument: str | None, name: str) -> None:
        super().__init__(message)
        self.argument = argument
        self.name = name


class MissingQueue(Exception):
    """A queue the route consumes without ``declare=True`` does not exist (404)."""


def describe_conflict(reply_text: str, *, what: str, vhost: str) -> TopologyConflict:
    """Turn RabbitMQ's 406 reply text into an error that says what differs and what to do."""
    match = _INEQUIVALENT.search(reply_text)
    if match is None:
        return TopologyConflict(
            f"{what} in vhost {vhost!r} cannot be declared: {reply_text}; it exists with other "
            "settings — delete it or make the declaration match",
            argument=None,
            name=what,
        )
    arg, kind, name = match["arg"], match["kind"], match["name"]
    detail = match["detail"].replace("received", "the route declares", 1)
    detail = detail.replace("but current is", "but the existing one has", 1)
    if kind == "queue":
        fix = (
            f"delete the queue (rabbitmqctl delete_queue {name} -p {match['vhost']}; its "
            "messages go with it) or make the route's Queue(...) match the existing one"
        )
        if arg == "x-queue-type":
            fix += (
                "; a queue's type cannot change in place: classic <-> quorum needs a new "
                "queue (move the messages, e.g. with a shovel, then switch)"
            )
    else:
        fix = "delete the exchange or make the route's Exchange(...) match the existing one"
    return TopologyConflict(
        f"{kind} {name!r} in vhost {match['vhost']!r} already exists with a different "
        f"{arg!r} ({detail}); RabbitMQ never changes an existing {kind}'s arguments: {fix}",
        argument=arg,
        name=name,
    )


async def _declare_exchange(channel: Channel, exchange: Exchange, vhost: str) -> None:
    try:
        await channel.exchange_declare(
            exchange.name,
            exchange.type,
            durable=exchange.durable,
            auto_delete=exchange.auto_delete,
            internal=exchange.internal,
            arguments=exchange.arguments,
        )
    except PreconditionFailedError as exc:
        raise describe_conflict(
            exc.reply_text, what=f"exchange {exchange.name!r}", vhost=vhost
        ) from None


async def _declare_queue(channel: Channel, queue: Queue, vhost: str) -> None:
    try:
        await channel.queue_declare(
            queue.name,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.auto_delete,
            arguments=queue.declare_arguments(),
        )
    except PreconditionFailedError as exc:
        raise describe_conflict(exc.reply_text, what=f"queue {queue.name!r}", vhost=vhost) from None


async def declare_topology(channel: Channel, queue: Queue, vhost: str) -> None:
    """Declare ``queue`` and what it needs (see the module docstring). A 406 raises
    :class:`TopologyConflict`; the channel is then closed by the broker."""
    exchanges = dict.fromkeys(b.exchange_ref for b in queue.bindings)
    for exchange in exchanges:
        await _declare_exchange(channel, exchange, vhost)
    dead_letter = queue.dead_letter_queue()
    if dead_letter is not None:
        await _declare_queue(channel, dead_letter, vhost)
    await _declare_queue(channel, queue, vhost)
    for binding in queue.bindings:
        await channel.queue_bind(
            queue.name, binding.exchange_ref.name, binding.routing_key, binding.arguments
        )


async def prepare_queue(channel: Channel, queue: Queue | str, vhost: str, declare: bool) -> None:
    """Declare ``queue`` (``declare=True``) or check it exists (passively)."""
    if declare:
        await declare_topology(channel, queue if isinstance(queue, Queue) else Queue(queue), vhost)
        return
    name = queue.name if isinstance(queue, Queue) else queue
    try:
        await channel.queue_declare(name, passive=True)
    except NotFoundError:
        raise MissingQueue(
            f"queue {name!r} does not exist in vhost {vhost!r}: pass declare=True to the "
            "route (it then declares the queue and its topology) or create it"
        ) from None


class QueueStateLog:
    """Logs a queue's problem when it changes, not on every retry (no log hot loop)."""

    def __init__(self, route: str, queue: str) -> None:
        self._route = route
        self._queue = queue
        self._last: str | None = None

    def problem(self, text: str, retry_in: float | None) -> None:
        """The queue cannot be consumed: log ``text`` at error level if it is news."""
        if text != self._last:
            then = "" if retry_in is None else " (retried quietly; logged again when it changes)"
            log.error("route %r: %s%s", self._route, text, then)
        else:
            log.debug("route %r: %s; retrying in %.1f s", self._route, text, retry_in or 0.0)
        self._last = text

    def ok(self) -> None:
        """The queue is consumed: say so if it had a problem before."""
        if self._last is not None:
            log.warning("route %r: queue %r is fine again; consuming", self._route, self._queue)
        self._last = None
