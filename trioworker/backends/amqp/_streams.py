"""Routes on RabbitMQ streams: where a route reads, and decisions a stream can take.

A stream (``Queue(kind="stream")``) is a log: consuming does not remove messages, and each
consumer says where to start (``x-stream-offset``: ``"first"``, ``"last"``, ``"next"``, an
offset, a time, an age). Over AMQP 0-9-1, RabbitMQ 3.10 keeps no position for a consumer, so
two things that work for queues break on a stream unless the route takes care of them:

- **Reconnects.** A new consumer starts where it is told (``"next"`` by default): every
  message that arrived while the connection was down would be skipped. The route keeps its
  position instead (:class:`StreamPosition`): after a reconnect, a failover or a rewind it
  consumes from the first offset it has not handled, and skips the deliveries it already
  handled past it (and, defensively, any before it: RabbitMQ 3.10 starts exactly at the
  offset asked for, the stream protocol at the start of its chunk).
- **Rejections.** ``basic.nack`` / ``basic.reject`` on a stream delivery make RabbitMQ close
  the *connection* (``540 NOT_IMPLEMENTED``), taking every route on it down. A stream
  route's decisions therefore all go out as acks (an ack only gives the consumer credit):
  a rejection without requeue skips the message, a requeue — the route's default after a
  failure — *rewinds*: the route consumes again from the first message not handled, after
  a backoff, as a queue would have redelivered it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import trio

from ...amqp import Channel, Consumer
from ...pipeline._actions import Actions
from ._acks import AckTracker
from ._message import Message, stream_offset

if TYPE_CHECKING:
    from ._route_stats import RouteStats

__all__ = [
    "StreamOffset",
    "StreamPosition",
    "StreamTracker",
    "check_stream_offset",
    "pump_stream",
]

#: Where a route starts reading a stream the first time (RabbitMQ's own choices).
StreamOffset = Literal["first", "last", "next"] | int | datetime.datetime | str
_AGE = re.compile(r"^[1-9][0-9]*[YMDhms]$")  # RabbitMQ's intervals: "7D", "1h", "30s"


def check_stream_offset(offset: Any) -> StreamOffset:
    """``offset`` if RabbitMQ accepts it as ``x-stream-offset``; else a clear ``ValueError``."""
    if isinstance(offset, bool):
        pass
    elif offset in ("first", "last", "next"):
        return offset  # type: ignore[no-any-return]
    elif isinstance(offset, int) and offset >= 0:
        return offset
    elif isinstance(offset, datetime.datetime):
        if offset.tzinfo is None:
            raise ValueError("stream_offset: a datetime needs a timezone (say, datetime.UTC)")
        return offset
    elif isinstance(offset, str) and _AGE.match(offset):
        return offset
    raise ValueError(
        f"stream_offset={offset!r}: 'first', 'last', 'next', an offset (int >= 0), an aware "
        "datetime, or an age such as '7D', '1h', '30m', '10s' (Y, M, D, h, m, s)"
    )


class StreamPosition:
    """Where one route reads one stream.

    It lives on the route, not on a connection's run of it, so it outlasts reconnects. It
    holds the offsets delivered and not handled yet — in flight (buffered or in a handler)
    or dropped (their channel died, or they were requeued: to read again) — and those
    handled past the first of them, to skip when they come again. All of it is within the
    prefetch window and the bulks being handled.
    """

    #: Handled offsets kept before the set is pruned down to those past the lowest pending.
    PRUNE_AT = 1024

    def __init__(self, start: StreamOffset) -> None:
        self.start = start
        self._in_flight: set[int] = set()
        self._dropped: set[int] = set()
        self._handled: set[int] = set()
        self._next: int | None = None  # one past the highest offset delivered
        self._floor = 0  # deliveries below it precede where the consumer was asked to start
        self._scope: trio.CancelScope | None = None  # the consumer's: cancelled to rewind
        self._rewind = False
        #: Rewinds in a row without a message handled since: the backoff between them.
        self.rewinds = 0

    def _lowest_pending(self) -> int | None:
        pending = self._in_flight | self._dropped
        return min(pending) if pending else None

    def new_connection(self) -> None:
        """A run of the route starts on a new connection: whatever the last one had in
        flight is gone with it, and is to be read again."""
        self._dropped |= self._in_flight
        self._in_flight.clear()

    def consume_from(self) -> StreamOffset:
        """``x-stream-offset`` for the next consumer: the first offset not handled."""
        self._rewind = False
        low = self._lowest_pending()
        if low is None:
            if self._next is None:
                return self.start  # nothing read yet: where the route was told to start
            low = self._next
        self._floor = low
        self._handled = {o for o in self._handled if o > low}
        return low

    def on_rewind(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` (the consumer's) when a message is requeued — at once if one was
        since :meth:`consume_from`."""
        self._scope = scope
        if self._rewind:
            scope.cancel()

    def wanted(self, offset: int) -> bool:
        """Whether to handle a delivery: not if it precedes where the consumer was asked to
        start, was handled already or is being handled (then ack it and skip it)."""
        if offset < self._floor or offset in self._handled or offset in self._in_flight:
            return False
        self._dropped.discard(offset)
        self._in_flight.add(offset)
        if self._next is None or offset >= self._next:
            self._next = offset + 1
        return True

    def forget(self, offset: int) -> None:
        """A delivery was dropped before a handler saw it (its channel died): read it again."""
        if offset in self._in_flight:
            self._in_flight.discard(offset)
            self._dropped.add(offset)

    def decided(self, offset: int, action: Actions) -> None:
        """The handler is done with ``offset``: handled, or (requeue) to be read again."""
        if offset not in self._in_flight:
            return
        self._in_flight.discard(offset)
        if action is Actions.REQUEUE or action is Actions.RETRY:
            self._dropped.add(offset)
            self._rewind = True
            if self._scope is not None:
                self._scope.cancel()
            return
        self.rewinds = 0
        if not self._in_flight and not self._dropped:
            # Everything delivered is handled: what comes again (a consumer reading from
            # an earlier rewind point) is skipped by the floor, the set can go.
            self._handled.clear()
            if self._next is not None:
                self._floor = max(self._floor, self._next)
            return
        self._handled.add(offset)
        if len(self._handled) > self.PRUNE_AT:
            low = self._lowest_pending()
            if low is not None:  # everything below it is handled: the floor covers it
                self._floor = max(self._floor, low)
                self._handled = {o for o in self._handled if o > low}


class StreamTracker(AckTracker):
    """The tracker of a stream consumer's channel: every decision goes out as an ack
    (see the module's docstring), and the route's position learns what was handled."""

    __slots__ = ("_offsets", "position")

    def __init__(self, channel: Channel, position: StreamPosition) -> None:
        super().__init__(channel)
        self.position = position
        self._offsets: dict[int, int] = {}  # delivery tag -> offset

    def track_offset(self, delivery_tag: int, offset: int) -> None:
        """Record a delivery to be handled, with its stream offset."""
        self._offsets[delivery_tag] = offset
        self.track(delivery_tag)

    def forget(self, delivery_tag: int) -> None:
        """The delivery was dropped unhandled (its channel died): the route reads it again."""
        offset = self._offsets.pop(delivery_tag, None)
        if offset is not None:
            self.position.forget(offset)

    def decide_many(self, decisions: list[tuple[int, Actions]]) -> int:
        position, offsets = self.position, self._offsets
        for tag, action in decisions:
            offset = offsets.pop(tag, None)
            if offset is not None:
                position.decided(offset, action)
        return super().decide_many([(tag, Actions.ACK) for tag, _ in decisions])


async def pump_stream(
    consumer: Consumer,
    tracker: StreamTracker,
    queue: str,
    put: Callable[[Message], None],
    stats: RouteStats,
) -> bool:
    """Hand a stream consumer's deliveries to the route's batcher (``put``) until the
    consumer ends (False) or a message is requeued (True: consume again, from
    :meth:`StreamPosition.consume_from`). Deliveries already handled, or before the offset
    asked for, are acked and skipped."""
    position = tracker.position
    counters = stats.queue(queue)
    with trio.CancelScope() as scope:
        position.on_rewind(scope)
        async for batch in consumer.batches():
            skipped: list[tuple[int, Actions]] = []
            for delivery in batch:
                offset = stream_offset(delivery)
                if offset is None or not position.wanted(offset):
                    tracker.track(delivery.delivery_tag)
                    skipped.append((delivery.delivery_tag, Actions.ACK))
                    continue
                counters.received += 1
                tracker.track_offset(delivery.delivery_tag, offset)
                put(Message(delivery, queue, tracker))
            if skipped:
                tracker.decide_many(skipped)
    return scope.cancelled_caught
