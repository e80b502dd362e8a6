"""``client.published``: what the app published, told apart from what the test did.

The memory broker records every ``basic.publish`` it receives, from any connection. The
client's own publishes and RPC requests go through the same broker, so each one marks the
record it made (the first new record that matches it, once its publish is confirmed or its
call is over) and ``by_others()`` leaves those out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._queues import NeedsMemoryBroker, QueuedMessage

if TYPE_CHECKING:
    from ._broker import MemoryBroker

__all__ = ["OwnPublishes"]


class OwnPublishes:
    """The client's own records in a memory broker's ``published`` list."""

    def __init__(self, broker: MemoryBroker | None, vhost: str) -> None:
        self._broker = broker
        self._vhost = vhost
        self._own: set[int] = set()

    @contextmanager
    def marking(self, match: Callable[[QueuedMessage], bool]) -> Iterator[None]:
        """Mark the record the block's publish makes (the first new one ``match`` takes)."""
        broker = self._broker
        if broker is None:
            yield
            return
        start = len(broker.published)
        try:
            yield
        finally:
            for message in broker.published[start:]:
                if id(message) not in self._own and match(message):
                    self._own.add(id(message))
                    break

    def by_others(self) -> list[QueuedMessage]:
        """Every record but the client's own, in order."""
        if self._broker is None:
            raise NeedsMemoryBroker(
                "client.published needs the memory broker (TestClient(app) without "
                "broker=): RabbitMQ does not show a client what others publish"
            )
        return [m for m in self._broker.published if id(m) not in self._own]

    def request_fate(self, queue: str) -> str:
        """What became of the requests sent to ``queue`` (for ``NoReplyError``)."""
        if self._broker is None:
            return ""
        try:
            view = self._broker.queue(queue, vhost=self._vhost)
        except KeyError:
            return f" (there is no queue {queue!r})"
        return (
            f" (queue {queue!r}: {view.consumers} consumer(s), {len(view.messages)} ready, "
            f"{view.acked} acked, {view.rejected} rejected, {view.dead_lettered} dead-lettered)"
        )
