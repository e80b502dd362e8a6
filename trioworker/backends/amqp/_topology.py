"""Topology a route owns: ``Queue``, ``Exchange``, ``Binding`` (what ``declare=True`` sets up).

These are plain, immutable descriptions, validated when they are built so that a typo fails
at import time rather than as a 406 from the broker at startup. Declaring them (and the
passive check without ``declare``) is the backend's job (``_declare.py``).

Why the shape: RabbitMQ compares a queue's arguments on every declare and closes the channel
with 406 PRECONDITION_FAILED when they differ, so everything that becomes an argument
(``kind`` → ``x-queue-type``, ``dead_letter`` → ``x-dead-letter-exchange`` /
``x-dead-letter-routing-key``) is derived here, in one place, from the description — the
same description always yields the same arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["Binding", "Exchange", "ExchangeType", "Queue", "QueueKind"]

ExchangeType = Literal["direct", "fanout", "topic", "headers"]
QueueKind = Literal["classic", "quorum", "stream"]

_EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
_QUEUE_KINDS = ("classic", "quorum", "stream")
#: RabbitMQ's limit for queue and exchange names (a short string, 255 bytes of UTF-8).
_MAX_NAME_BYTES = 255


def _check_name(what: str, name: str, *, allow_empty: bool) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}")
    if not name and not allow_empty:
        raise ValueError(f"{what} name must not be empty")
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise ValueError(f"{what} name {name[:40]!r}... is longer than 255 bytes")
    if name.startswith("amq.") and what == "queue":
        raise ValueError(f"queue name {name!r}: names starting with 'amq.' are reserved")


def _frozen_arguments(arguments: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if arguments is None:
        return {}
    if not isinstance(arguments, Mapping):
        raise TypeError("arguments must be a mapping of str to AMQP field values")
    bad = [k for k in arguments if not isinstance(k, str)]
    if bad:
        raise TypeError(f"argument names must be str, got {bad!r}")
    return dict(arguments)


@dataclasses.dataclass(frozen=True)
class Exchange:
    """An exchange a route's queues are bound to (durable by default).

    ``Exchange("")`` is the default exchange: it is never declared.
    """

    name: str
    type: ExchangeType = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("exchange", self.name, allow_empty=True)
        if self.type not in _EXCHANGE_TYPES:
            raise ValueError(f"exchange type {self.type!r}: expected one of {_EXCHANGE_TYPES}")
        object.__setattr__(self, "arguments", _frozen_arguments(self.arguments))

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.durable, self.auto_delete, self.internal))

    @property
    def is_default(self) -> bool:
        """The nameless default exchange, which exists on every vhost and is never declared."""
        return self.name == ""


@dataclasses.dataclass(frozen=True)
class Binding:
    """Bind the queue to ``exchange`` with ``routing_key`` (and, for headers exchanges,
    ``arguments``). The exchange is declared along with the queue when ``declare=True``."""

    exchange: Exchange | str
    routing_key: str = ""
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.exchange, str):
            object.__setattr__(self, "exchange", Exchange(self.exchange))
        elif not isinstance(self.exchange, Exchange):
            raise TypeError("Binding(exchange=...) takes an Exchange or an exchange name")
        if self.exchange_ref.is_default:
            raise ValueError("queues cannot be bound to the default exchange (it routes by name)")
        object.__setattr__(self, "arguments", _frozen_arguments(self.arguments))

    @property
    def exchange_ref(self) -> Exchange:
        """The exchange as an :class:`Exchange` (a name given at creation is wrapped)."""
        exchange = self.exchange
        assert isinstance(exchange, Exchange)  # __post_init__ wrapped a name
        return exchange


@dataclasses.dataclass(frozen=True)
class Queue:
    """A queue a route consumes, with what must exist around it.

    Arguments:
        kind: ``"classic"``, ``"quorum"`` (replicated; always durable, never exclusive) or
            ``"stream"``; becomes ``x-queue-type``.
        arguments: extra queue arguments (``x-max-length``, ``x-message-ttl``, ...).
        bindings: bindings of this queue, declared with it.
        dead_letter: the name of a dead-letter *queue*. With ``declare=True`` it is declared
            (durable, same kind unless a stream) and wired: messages rejected without requeue
            go to it through the default exchange (``x-dead-letter-exchange=""``,
            ``x-dead-letter-routing-key=<dead_letter>``); a quorum queue also gets
            at-least-once dead-lettering (``x-dead-letter-strategy=at-least-once``, which
            RabbitMQ honours only with ``x-overflow=reject-publish``: both are set).
        delivery_limit: quorum queues only (``x-delivery-limit``): after this many
            returns of a message to the queue — requeues, and the redeliveries that follow
            a consumer's connection loss or node failure — the broker dead-letters it (or
            drops it, without ``dead_letter``). Leave room for failovers: each one returns
            every message a worker held unacknowledged.
    """

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    kind: QueueKind = "classic"
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    bindings: Sequence[Binding] = ()
    dead_letter: str | None = None
    delivery_limit: int | None = None

    def __post_init__(self) -> None:
        _check_name("queue", self.name, allow_empty=False)
        if self.kind not in _QUEUE_KINDS:
            raise ValueError(f"queue kind {self.kind!r}: expected one of {_QUEUE_KINDS}")
        if self.kind != "classic" and (not self.durable or self.exclusive or self.auto_delete):
            raise ValueError(
                f"a {self.kind} queue is always durable and never exclusive or auto-delete"
            )
        arguments = _frozen_arguments(self.arguments)
        if "x-queue-type" in arguments and arguments["x-queue-type"] != self.kind:
            raise ValueError(
                f"queue {self.name!r}: arguments say x-queue-type={arguments['x-queue-type']!r}"
                f" but kind={self.kind!r}; use kind= only"
            )
        object.__setattr__(self, "arguments", arguments)
        bindings = tuple(self.bindings)
        if not all(isinstance(b, Binding) for b in bindings):
            raise TypeError("Queue(bindings=...) takes Binding objects")
        object.__setattr__(self, "bindings", bindings)
        if self.dead_letter is not None:
            _check_name("dead-letter queue", self.dead_letter, allow_empty=False)
            if self.dead_letter == self.name:
                raise ValueError(f"queue {self.name!r} cannot be its own dead-letter queue")
            if self.kind == "stream":
                raise ValueError("streams do not dead-letter (messages are never removed)")
            for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
                if key in arguments:
                    raise ValueError(f"queue {self.name!r}: give dead_letter= or {key}, not both")
            _check_at_least_once(self.name, self.kind, arguments)
        if self.delivery_limit is not None:
            _check_delivery_limit(self.name, self.kind, self.delivery_limit, arguments)

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.durable, self.exclusive, self.auto_delete))

    def declare_arguments(self) -> dict[str, Any]:
        """The ``Queue.Declare`` arguments this description stands for (the same every time,
        so a redeclare never trips RabbitMQ's 406 *inequivalent arg* check)."""
        arguments = dict(self.arguments)
        if self.kind != "classic":
            arguments["x-queue-type"] = self.kind
        if self.delivery_limit is not None:
            arguments["x-delivery-limit"] = self.delivery_limit
        if self.dead_letter is not None:
            arguments["x-dead-letter-exchange"] = ""
            arguments["x-dead-letter-routing-key"] = self.dead_letter
            if self.kind == "quorum":
                # Classic dead-lettering is at-most-once; a quorum queue can do better, and
                # at-least-once requires reject-publish overflow (RabbitMQ docs).
                arguments.setdefault("x-dead-letter-strategy", "at-least-once")
                arguments.setdefault("x-overflow", "reject-publish")
        return arguments

    def dead_letter_queue(self) -> Queue | None:
        """The dead-letter queue to declare with this one, if any."""
        if self.dead_letter is None:
            return None
        return Queue(self.dead_letter, kind="quorum" if self.kind == "quorum" else "classic")


def _check_at_least_once(name: str, kind: str, arguments: Mapping[str, Any]) -> None:
    """A quorum queue's at-least-once dead-lettering needs ``reject-publish`` overflow:
    with any other, RabbitMQ silently falls back to at-most-once (a message can be lost
    on its way to the dead-letter queue)."""
    if kind != "quorum" or arguments.get("x-dead-letter-strategy", "at-least-once") != (
        "at-least-once"
    ):
        return
    overflow = arguments.get("x-overflow", "reject-publish")
    if overflow != "reject-publish":
        raise ValueError(
            f"queue {name!r}: at-least-once dead-lettering needs x-overflow='reject-publish'"
            f" (got {overflow!r}); or pass x-dead-letter-strategy='at-most-once'"
        )


def _check_delivery_limit(name: str, kind: str, limit: int, arguments: Mapping[str, Any]) -> None:
    if kind != "quorum":
        raise ValueError(f"queue {name!r}: delivery_limit= is for quorum queues (kind={kind!r})")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"queue {name!r}: delivery_limit must be a positive int, got {limit!r}")
    if "x-delivery-limit" in arguments:
        raise ValueError(f"queue {name!r}: give delivery_limit= or x-delivery-limit, not both")
