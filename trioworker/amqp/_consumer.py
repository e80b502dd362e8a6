"""The deliveries of one ``basic.consume``: buffered for an async iterator, or handed to a
callback as they are parsed.

Buffered mode (the default) is what a worker loop wants: deliveries queue up in arrival
order, bounded by the channel's prefetch, and ``consumer.batches()`` takes whatever arrived
since the last batch. Callback mode (``on_delivery=``) is for consumers whose work per
delivery is tiny and synchronous — matching an RPC reply to its waiting caller — where a
buffer and a task to drain it would cost a task switch per message: the connection's reader
calls the callback directly.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import trio

from .protocol import Delivery, LocalProtocolError

log = logging.getLogger("trioworker.amqp")

_consumer_ids = itertools.count(1)
_TAG_PREFIX = f"tw.{os.getpid()}."

#: Called by the connection's reader with each delivery of a callback-mode consumer.
OnDelivery = Callable[[Delivery], None]


def new_consumer_tag() -> str:
    """A consumer tag unique in this process (``tw.<pid>.<n>``).

    Tags are made client-side so a consumer is registered before ``Basic.Consume`` is sent:
    deliveries can arrive in the same read as ``ConsumeOk``, and none may be mistaken for an
    unknown consumer's.
    """
    return f"{_TAG_PREFIX}{next(_consumer_ids)}"


class Acknowledger(Protocol):
    """What a consumer's user needs of its channel: settling the deliveries it yielded."""

    @property
    def number(self) -> int: ...
    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None: ...
    def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None: ...
    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None: ...


class Consumer:
    """The deliveries of one ``basic.consume``. Get one from :meth:`Channel.basic_consume`.

    In buffered mode it is an async iterator of :class:`~.protocol.Delivery` (and
    :meth:`batches` yields lists). Iteration ends after :meth:`Channel.basic_cancel` once
    the buffer is drained; it raises :class:`ConsumerCancelledError` when the broker cancels
    the consumer (after yielding what was buffered), and :class:`ChannelClosedError`/a
    connection error when the channel dies (buffered deliveries are dropped: their tags are
    no longer valid, and the broker requeues them).

    In callback mode (``on_delivery``) nothing is buffered: the connection's reader calls
    ``on_delivery(delivery)`` for each one, in arrival order. It runs inside the reader, so
    it must not block, and should not raise (an exception is logged, and that delivery is
    left unsettled). Iterating a callback-mode consumer is an error; :meth:`wait_ended`
    tells when it ends, and why.
    """

    def __init__(
        self,
        channel: Acknowledger,
        queue: str,
        consumer_tag: str,
        no_ack: bool,
        *,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        #: The channel the deliveries arrived on: settle them there.
        self.channel = channel
        self.queue = queue
        self.consumer_tag = consumer_tag
        self.no_ack = no_ack
        self._buffer: deque[Delivery] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._callback = on_delivery is not None
        #: What the channel's reader calls with each delivery: ``on_delivery`` in callback
        #: mode, else the buffer's append.
        self.deliver: OnDelivery = on_delivery if on_delivery is not None else self._push
        self._end: BaseException | None = None  # what iteration raises once drained
        self._ended = trio.Event()

    def __repr__(self) -> str:
        mode = "callback" if self._callback else f"{len(self._buffer)} buffered"
        state = "active" if self.active else "ended"
        return f"<Consumer {self.consumer_tag!r} on {self.queue!r} {state}, {mode}>"

    @property
    def buffered(self) -> int:
        """Deliveries received and not yet taken by the iterator (0 in callback mode)."""
        return len(self._buffer)

    @property
    def active(self) -> bool:
        """False once cancelled (by us or the broker) or its channel is gone."""
        return not self._ended.is_set()

    def _push(self, delivery: Delivery) -> None:
        self._buffer.append(delivery)
        if self._lot:
            self._lot.unpark_all()

    def end(self, reason: BaseException, *, drop_buffered: bool) -> None:
        """Mark the consumer ended; called by its channel, once (later calls are ignored).

        ``reason`` is what iteration raises once the buffer is drained
        (``StopAsyncIteration`` after ``basic_cancel``). ``drop_buffered`` empties the
        buffer at once: the channel died, so those deliveries can no longer be settled.
        """
        if self._ended.is_set():
            return
        self._end = reason
        if drop_buffered:
            self._buffer.clear()
        self._ended.set()
        self._lot.unpark_all()

    async def wait_ended(self) -> None:
        """Wait until the consumer ends. Return if it was cancelled with ``basic_cancel``;
        raise :class:`ConsumerCancelledError` if the broker cancelled it, or the channel's
        or connection's error if that died.

        Always a cancellation point; cancelling it leaves the consumer running.
        """
        await self._ended.wait()
        if not isinstance(self._end, StopAsyncIteration) and self._end is not None:
            raise self._end

    # --------------------------------------------------------------- iterate

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        buffer = self._buffer
        if buffer:
            await trio.lowlevel.checkpoint()
            if buffer:
                return buffer.popleft()
        while not buffer:
            self._raise_if_ended()
            await self._lot.park()
        return buffer.popleft()

    async def get_batch(self, max_size: int | None = None) -> list[Delivery]:
        """Wait for at least one delivery; return every buffered one (up to ``max_size``).

        Raises ``StopAsyncIteration`` once the consumer ended normally and is drained.
        """
        buffer = self._buffer
        if buffer:
            await trio.lowlevel.checkpoint()
        while not buffer:
            self._raise_if_ended()
            await self._lot.park()
        if max_size is None or max_size >= len(buffer):
            batch = list(buffer)
            buffer.clear()
            return batch
        return [buffer.popleft() for _ in range(max_size)]

    async def batches(self, max_size: int | None = None) -> AsyncIterator[list[Delivery]]:
        """Iterate over lists of deliveries: whatever arrived since the last one, ≥ 1."""
        while True:
            try:
                batch = await self.get_batch(max_size)
            except StopAsyncIteration:
                return
            yield batch

    def _raise_if_ended(self) -> None:
        """Before waiting on an empty buffer: raise how the consumer ended, if it did."""
        if self._callback:
            raise LocalProtocolError(
                f"consumer {self.consumer_tag!r} hands its deliveries to on_delivery: "
                "there is nothing to iterate (use wait_ended())"
            )
        if self._ended.is_set():
            raise self._end if self._end is not None else StopAsyncIteration
