"""How messages enter queues: publishing through an exchange, and dead-lettering.

A publish is routed by its exchange to the queues that match, each gets its own entry of
the same :class:`~._content.Content`. RabbitMQ's details kept here:

* the default exchange routes by queue name, and ``amq.rabbitmq.reply-to.*`` names to the
  channel that consumes direct replies (never counted as routed: a ``mandatory`` reply is
  also returned, a RabbitMQ 3.10 quirk kept for parity);
* ``CC`` and ``BCC`` headers add routing keys (sender-selected distribution); ``BCC`` is
  removed from the stored message;
* a message's ``expiration`` (milliseconds, a string) must be a non-negative integer, or
  the publish fails with 406 — and it caps the queue's ``x-message-ttl``;
* a queue in ``reject-publish`` overflow refuses the message (the publisher is nacked).

Dead-lettered copies (:mod:`._dead_letter`) go through the dead-letter exchange the same
way, except that a missing exchange drops them silently and a fully automatic cycle drops
them for the queue it would close on, as RabbitMQ does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from ...amqp import PropertyDecodeError
from ._content import FLAG_EXPIRATION, FLAG_HEADERS, Content, Entry, copy_properties
from ._dead_letter import dead_letter_copy, in_cycle
from ._errors import (
    SYNTAX_ERROR,
    ConnectionError,
    access_refused,
    not_found,
    precondition_failed,
    resource,
)
from ._exchange import Exchange
from ._queue import Queue

__all__ = ["REPLY_PREFIX", "Routing"]

log = logging.getLogger("trioworker.testing")

#: Routing keys of direct replies: ``amq.rabbitmq.reply-to.<channel's token>``.
REPLY_PREFIX = "amq.rabbitmq.reply-to."

_EXPIRATION = re.compile(r"([+-]?\d+)(.*)", re.DOTALL)


def _message_ttl(content: Content) -> float | None:
    """The ``expiration`` property in seconds (406 if it is not a valid one)."""
    expiration = content.properties.expiration
    if not expiration:
        return None
    match = _EXPIRATION.fullmatch(expiration)
    if match is None:
        reason = "no_integer"
    elif match[2]:
        reason = f'{{leftover_string,"{match[2]}"}}'
    elif int(match[1]) < 0:
        reason = f"{{value_negative,{int(match[1])}}}"
    else:
        return int(match[1]) / 1000
    raise precondition_failed(f"invalid expiration '{expiration}': {reason}")


def _sender_selected(routing_key: str, content: Content) -> tuple[list[str], Content]:
    """Routing keys from the ``CC``/``BCC`` headers; ``BCC`` is removed from the message."""
    headers: dict[str, Any] = content.properties.headers or {}
    keys = [routing_key]
    for name in ("CC", "BCC"):
        extra = headers.get(name)
        if isinstance(extra, list):
            keys.extend(k for k in extra if isinstance(k, str) and k not in keys)
    if "BCC" in headers:
        props = copy_properties(content.properties)
        assert props.headers is not None
        del props.headers["BCC"]
        content = content.replace(props)
    return keys, content


class Routing:
    """The part of a vhost that routes messages (see :class:`~._vhost.VHost`)."""

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        schedule: Callable[[float], None],
    ) -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        #: Direct reply-to: routing key -> the hidden queue of the consuming channel.
        self.reply_queues: dict[str, Queue] = {}
        self._clock = clock
        self._wall_clock = wall_clock
        self._schedule = schedule
        self._cycles_logged: set[str] = set()

    # ------------------------------------------------------- Host (for queues)

    def now(self) -> float:
        return self._clock()

    def schedule(self, deadline: float) -> None:
        self._schedule(deadline)

    # -------------------------------------------------------------- publishing

    def route(self, exchange: Exchange, keys: list[str], content: Content) -> list[Queue]:
        """The queues ``content`` goes to from ``exchange`` with routing ``keys``."""
        if exchange.name != "":
            return exchange.route(keys, content)
        found = []
        for key in keys:
            queue = self.queues.get(key)
            if queue is None and key.startswith(REPLY_PREFIX):
                queue = self.reply_queues.get(key)
            if queue is not None and queue not in found:
                found.append(queue)
        return found

    def publish(
        self, exchange_name: str, routing_key: str, content: Content, flags: int
    ) -> tuple[bool, bool]:
        """Route a publish into its queues: ``(routed to a queue, refused by one)``.

        ``flags`` are the property flags (the broker decodes properties only when a flag
        says they matter). Raises :class:`~._errors.ChannelError` for a missing or
        internal exchange or an invalid ``expiration``.
        """
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise not_found("exchange", exchange_name, self.name)
        if exchange.internal:
            raise access_refused(
                f"cannot publish to internal {resource('exchange', exchange_name, self.name)}"
            )
        try:
            ttl = _message_ttl(content) if flags & FLAG_EXPIRATION else None
            keys = [routing_key]
            if flags & FLAG_HEADERS:
                raw = content.raw_properties
                if b"\x02CC" in raw or b"\x03BCC" in raw:
                    keys, content = _sender_selected(routing_key, content)
            queues = self.route(exchange, keys, content)
        except PropertyDecodeError as exc:
            raise ConnectionError(SYNTAX_ERROR, f"undecodable message properties: {exc}") from None
        refused = False
        routed = False
        if queues:
            now = self._clock()
            size = len(content.body)
            for queue in queues:
                # RabbitMQ 3.10 delivers a direct reply without counting it as routed: a
                # mandatory one is delivered *and* returned. Same here.
                routed = routed or not queue.name.startswith(REPLY_PREFIX)
                if queue.would_reject(size):
                    refused = True
                else:
                    queue.publish(content, ttl, now)
        return routed, refused

    # ---------------------------------------------------------- dead-lettering

    def dead_letter(self, queue: Queue, entries: list[Entry], reason: str) -> None:
        """Re-publish ``entries`` through ``queue``'s dead-letter exchange, if it has one
        that exists (else they are dropped, as RabbitMQ drops them)."""
        settings = queue.settings
        name = settings.dead_letter_exchange
        if name is None:
            return
        exchange = self.exchanges.get(name)
        if exchange is None:
            return
        queue.dead_lettered += len(entries)
        wall = self._wall_clock()
        now = self._clock()
        for entry in entries:
            try:
                copy, keys = dead_letter_copy(
                    entry.content, reason, queue.name, name, settings.dead_letter_routing_key, wall
                )
                targets = self.route(exchange, keys, copy)
                if reason != "rejected":
                    targets = [t for t in targets if not self._cycle(t, copy)]
            except PropertyDecodeError:
                continue  # nothing to build the copy from: dropped
            size = len(copy.body)
            for target in targets:
                if not target.would_reject(size):
                    target.publish(copy, None, now)

    def _cycle(self, target: Queue, copy: Content) -> bool:
        if not in_cycle(target.name, copy):
            return False
        if target.name not in self._cycles_logged:
            self._cycles_logged.add(target.name)
            log.warning(
                "memory broker: dead-letter cycle without rejection through queue %r in "
                "vhost %r: message dropped (as RabbitMQ drops it)",
                target.name,
                self.name,
            )
        return True
