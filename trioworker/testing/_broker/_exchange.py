"""Exchanges and their bindings: where a published message goes.

An exchange turns ``(routing key, headers)`` into the set of queues bound to it that
match; a queue appears once however many of its bindings match (RabbitMQ delivers one
copy per queue). Direct exchanges look the key up in a dict; topic exchanges remember the
queues of each routing key seen until the bindings change (publishers reuse few keys),
so the per-message cost is a dict lookup in both; fanout returns every bound queue; a
headers exchange decodes the message's headers and matches each binding.

The default exchange (``""``) is not one of these: it routes by queue name, and the
vhost does that itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._content import Content
from ._matching import headers_match, split_words, topic_matches

if TYPE_CHECKING:
    from ._queue import Queue

__all__ = ["EXCHANGE_TYPES", "Binding", "Exchange"]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
#: Topic routing results remembered per exchange before the memo starts over.
_MEMO_LIMIT = 4096


class Binding:
    """``exchange --routing_key/arguments--> queue``."""

    __slots__ = ("arguments", "queue", "routing_key", "words")

    def __init__(self, queue: Queue, routing_key: str, arguments: Mapping[str, Any]) -> None:
        self.queue = queue
        self.routing_key = routing_key
        self.arguments = dict(arguments)
        self.words = split_words(routing_key)

    def key(self) -> tuple[int, str, str]:
        """What makes two bindings the same one (RabbitMQ: source, destination, key, args)."""
        return (id(self.queue), self.routing_key, repr(sorted(self.arguments.items())))


class Exchange:
    """One exchange of a vhost."""

    def __init__(
        self,
        name: str,
        type: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = dict(arguments or {})
        self._bindings: dict[tuple[int, str, str], Binding] = {}
        self._direct: dict[str, list[Queue]] = {}
        self._memo: dict[str, list[Queue]] = {}

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r} {self.type}>"

    @property
    def bindings(self) -> list[Binding]:
        return list(self._bindings.values())

    def bind(self, queue: Queue, routing_key: str, arguments: Mapping[str, Any]) -> None:
        """Add a binding (binding twice is the same binding: a no-op)."""
        binding = Binding(queue, routing_key, arguments)
        key = binding.key()
        if key in self._bindings:
            return
        self._bindings[key] = binding
        self._changed()

    def unbind(self, queue: Queue, routing_key: str, arguments: Mapping[str, Any]) -> bool:
        """Remove a binding; whether it existed."""
        removed = self._bindings.pop(Binding(queue, routing_key, arguments).key(), None)
        if removed is not None:
            self._changed()
        return removed is not None

    def unbind_queue(self, queue: Queue) -> bool:
        """Remove every binding to ``queue`` (it is being deleted); whether there was one."""
        keys = [k for k, b in self._bindings.items() if b.queue is queue]
        for key in keys:
            del self._bindings[key]
        if keys:
            self._changed()
        return bool(keys)

    def _changed(self) -> None:
        self._memo.clear()
        direct: dict[str, list[Queue]] = {}
        if self.type == "direct":
            for binding in self._bindings.values():
                queues = direct.setdefault(binding.routing_key, [])
                if binding.queue not in queues:
                    queues.append(binding.queue)
        self._direct = direct

    def route(self, routing_keys: list[str], content: Content) -> list[Queue]:
        """The queues a message published with ``routing_keys`` goes to (each once)."""
        kind = self.type
        if kind == "direct":
            if len(routing_keys) == 1:
                return self._direct.get(routing_keys[0], [])
            found: list[Queue] = []
            for key in routing_keys:
                found.extend(q for q in self._direct.get(key, ()) if q not in found)
            return found
        if kind == "topic":
            found = []
            for key in routing_keys:
                found.extend(q for q in self._topic(key) if q not in found)
            return found
        if kind == "fanout":
            return list(dict.fromkeys(b.queue for b in self._bindings.values()))
        headers = content.properties.headers if self._bindings else None
        return list(
            dict.fromkeys(
                b.queue for b in self._bindings.values() if headers_match(b.arguments, headers)
            )
        )

    def _topic(self, routing_key: str) -> list[Queue]:
        queues = self._memo.get(routing_key)
        if queues is None:
            words = split_words(routing_key)
            queues = list(
                dict.fromkeys(
                    b.queue for b in self._bindings.values() if topic_matches(b.words, words)
                )
            )
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[routing_key] = queues
        return queues
