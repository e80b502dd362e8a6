"""What a test reads about a queue: :class:`QueueView`, a live view (not a snapshot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._content import Entry, StoredMessage
from ._queue import Queue

__all__ = ["QueueView"]


class QueueView:
    """A queue of a :class:`~._broker.MemoryBroker`, read live.

    The counts are since the queue was declared: ``acked`` (by consumers, and no-ack
    deliveries), ``rejected`` (rejected or nacked without requeue), ``requeued`` (requeued
    by nack, reject, ``basic.recover`` or a closed channel), ``dead_lettered`` (sent to a
    dead-letter exchange), ``expired`` (left by TTL).
    """

    def __init__(self, queue: Queue, unacked: Callable[[Queue], list[Entry]]) -> None:
        self._queue = queue
        self._unacked = unacked

    def __repr__(self) -> str:
        q = self._queue
        return (
            f"<QueueView {q.name!r} messages={len(q.ready)} unacked={q.unacked} "
            f"consumers={len(q.consumers)}>"
        )

    @property
    def name(self) -> str:
        return self._queue.name

    @property
    def messages(self) -> list[StoredMessage]:
        """The ready messages, head first (delivered, unsettled ones are in :attr:`unacked`)."""
        return [StoredMessage(e.content, e.redelivered) for e in self._queue.ready]

    @property
    def unacked(self) -> list[StoredMessage]:
        """Delivered to a consumer (or got) and not settled yet."""
        return [StoredMessage(e.content, e.redelivered) for e in self._unacked(self._queue)]

    @property
    def consumers(self) -> int:
        return len(self._queue.consumers)

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments the queue was declared with."""
        return dict(self._queue.arguments)

    @property
    def durable(self) -> bool:
        return self._queue.durable

    @property
    def exclusive(self) -> bool:
        return self._queue.owner is not None

    @property
    def auto_delete(self) -> bool:
        return self._queue.auto_delete

    @property
    def kind(self) -> str:
        """``"classic"`` or ``"quorum"``."""
        return self._queue.settings.kind

    @property
    def deleted(self) -> bool:
        """True once the queue was deleted (the view keeps its last state)."""
        return self._queue.deleted

    @property
    def acked(self) -> int:
        return self._queue.acked

    @property
    def rejected(self) -> int:
        return self._queue.rejected

    @property
    def requeued(self) -> int:
        return self._queue.requeued

    @property
    def dead_lettered(self) -> int:
        return self._queue.dead_lettered

    @property
    def expired(self) -> int:
        return self._queue.expired
