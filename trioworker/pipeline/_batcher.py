"""Bulks: group items, call a handler with each group, report the outcome.

The batcher knows nothing about AMQP or SSE (docs/architecture.md, the pipeline). It takes items
with :meth:`Batcher.put`, forms bulks of ``bulk_size`` items — flushing a smaller bulk once
``flush_interval`` seconds have passed since its *first* item arrived — and runs the handler
on each, at most ``concurrency`` at once. For every bulk it reports ``(bulk, error)`` to
``on_done``: ``error`` is ``None`` when the handler returned, the exception it raised (or a
:class:`HandlerTimeout`) otherwise. What that means for each item is the caller's business.

Shutdown (:meth:`Batcher.close`) stops forming bulks at once. Items not yet handed to a
handler — buffered, or in a bulk still waiting for its flush — are given to
``on_unhandled`` so they can be returned to their source (for AMQP: requeued). Handler calls
already running are left to finish; :meth:`run` returns when they have. Cancelling
:meth:`run` cancels them; their bulks are then reported to ``on_unhandled`` too, because a
cancelled handler did not finish its work.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from ._histogram import DURATION_BOUNDS, SIZE_BOUNDS, Histogram

T = TypeVar("T")

__all__ = ["OUTCOMES", "Batcher", "BatcherStats", "HandlerTimeout"]


class HandlerTimeout(TimeoutError):
    """The handler did not finish within the route's ``timeout``."""


#: Outcomes of a handler call, as ``BatcherStats.durations`` keys them.
OUTCOMES = ("ok", "error", "timeout", "cancelled")


class BatcherStats:
    """Counters a metrics exporter reads at scrape time (plain ints: bumped per bulk).

    A caller that restarts its batcher (the AMQP backend does, on every reconnect) passes
    the same stats to each new one, so the counts cover the route's life, not one run.
    ``durations`` holds one histogram of handler call times per outcome: ``ok`` (returned),
    ``error`` (raised), ``timeout`` (:class:`HandlerTimeout`), ``cancelled`` (shutdown past
    the grace period, connection lost).
    """

    __slots__ = ("bulk_sizes", "durations", "flushed_by_size", "flushed_by_time", "running")

    def __init__(self) -> None:
        self.flushed_by_size = 0
        self.flushed_by_time = 0
        self.running = 0
        self.bulk_sizes = Histogram(SIZE_BOUNDS)
        self.durations = {outcome: Histogram(DURATION_BOUNDS) for outcome in OUTCOMES}

    @property
    def bulks(self) -> int:
        """Bulks handed to the handler (read from ``bulk_sizes``: one count per bulk)."""
        return self.bulk_sizes.count

    @property
    def items(self) -> int:
        """Items handed to the handler, in all bulks (the sum of ``bulk_sizes``)."""
        return int(self.bulk_sizes.sum)


class Batcher(Generic[T]):
    """Forms bulks of items and hands each to ``handler``.

    ``handler`` is an async callable taking the list of items; its timeout, sync/async
    adaptation and logging are the caller's concern (see ``_handlers.py``), so the batcher
    stays a pure scheduling component.
    """

    def __init__(
        self,
        handler: Callable[[list[T]], Awaitable[object]],
        *,
        bulk_size: int = 1,
        flush_interval: float = 60.0,
        concurrency: int = 1,
        on_done: Callable[[list[T], BaseException | None], None],
        on_unhandled: Callable[[list[T]], None],
        stats: BatcherStats | None = None,
    ) -> None:
        if bulk_size < 1:
            raise ValueError("bulk_size must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if flush_interval < 0 or math.isnan(flush_interval):
            raise ValueError("flush_interval must be >= 0")
        self.handler = handler
        self.bulk_size = bulk_size
        self.flush_interval = flush_interval
        self.concurrency = concurrency
        self._on_done = on_done
        self._on_unhandled = on_unhandled
        self._items: deque[T] = deque()
        # The bulk waiting to fill up (or for its flush), so :attr:`waiting` can count it.
        self._forming: list[T] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        # A semaphore, not a CapacityLimiter: the slot is taken by the batcher's loop and
        # given back by the task running the bulk, and a limiter insists they be the same.
        self._slots = trio.Semaphore(concurrency)
        self._idle = trio.Event()
        self._idle.set()
        # Calls running in *this* batcher (``stats.running`` may be shared with others).
        self._running = 0
        # id(bulk) -> time.perf_counter() its handler call began, for the calls running:
        # what :meth:`longest_running_call` (and so ``/health``) reads.
        self._call_starts: dict[int, float] = {}
        # No bulk starts before this time (trio clock; 0: no pause) — see :meth:`pause`.
        self._resume_at = 0.0
        # A bulk is filling up (in ``_fill``), and :meth:`flush` asked to hand it over now.
        self._filling = False
        self._flush_now = False
        self.stats = BatcherStats() if stats is None else stats

    @property
    def buffered(self) -> int:
        """Items waiting to be put in a bulk."""
        return len(self._items)

    @property
    def waiting(self) -> int:
        """Items not yet handed to a handler: buffered, or in a bulk still filling up."""
        return len(self._items) + len(self._forming)

    @property
    def running(self) -> int:
        """Handler calls running in this batcher now."""
        return self._running

    @property
    def idle(self) -> bool:
        """True when no item waits for a handler and no handler call runs (what a test's
        ``drain()`` waits for, see ``trioworker.testing``)."""
        return not (self._items or self._forming or self._running)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def flush(self) -> bool:
        """Hand the bulk filling up to the handler now, as if its ``flush_interval`` had
        run out (it counts as flushed by time); return whether one was filling up.

        For a caller that knows no more items can come before the flush would happen: a
        test's ``drain()`` on the in-memory broker, which would otherwise wait the whole
        interval (60 s by default) in real time for nothing.
        """
        if not self._filling or self._flush_now:
            return False
        self._flush_now = True
        self._lot.unpark_all()
        return True

    def put(self, item: T) -> None:
        """Add an item (never blocks: the source bounds how many are in flight).

        After :meth:`close`, the item goes straight to ``on_unhandled``.
        """
        if self._closed:
            self._on_unhandled([item])
            return
        self._items.append(item)
        if self._lot:
            self._lot.unpark_all()

    def close(self) -> None:
        """Stop forming bulks; hand buffered items to ``on_unhandled``."""
        if self._closed:
            return
        self._closed = True
        if self._items:
            items = list(self._items)
            self._items.clear()
            self._on_unhandled(items)
        self._lot.unpark_all()

    def discard(self, unwanted: Callable[[T], bool]) -> int:
        """Forget the items not yet handed to a handler for which ``unwanted`` is true —
        buffered, in a bulk still filling up, or in a bulk waiting for a free call — and
        return how many. Their source is gone (for AMQP: the channel closed, the broker
        redelivers them): neither the handler nor ``on_unhandled`` sees them."""
        items = self._items
        before = len(items) + len(self._forming)
        if items:
            kept = [item for item in items if not unwanted(item)]
            if len(kept) != len(items):
                items.clear()
                items.extend(kept)
        if self._forming:
            # The very list the loop fills: changed in place.
            self._forming[:] = [item for item in self._forming if not unwanted(item)]
        return before - len(items) - len(self._forming)

    def pause(self, seconds: float) -> None:
        """Start no bulk for ``seconds`` (backing off after failures); items keep being
        buffered meanwhile. Calls already running are not touched, :meth:`close` ends the
        pause at once, and a later call replaces the pause (``0`` lifts it)."""
        self._resume_at = trio.current_time() + seconds if seconds > 0 else 0.0

    async def _paused(self) -> None:
        while not self._closed:
            resume_at = self._resume_at  # may move meanwhile (a call still running failed)
            if trio.current_time() >= resume_at:
                break
            with trio.move_on_at(resume_at):
                await self._lot.park()  # woken by put() and close(): look again
        self._resume_at = 0.0

    def longest_running_call(self) -> float | None:
        """Seconds the oldest handler call still running has run; None when none runs.

        Calls start in order, so the first one recorded is the oldest; ``/health`` reads
        this to report a route whose call runs too long (``Health.degraded``).
        """
        for started in self._call_starts.values():
            return time.perf_counter() - started
        return None

    async def wait_idle(self) -> None:
        """Wait until no handler call is running."""
        await self._idle.wait()

    def _take(self, bulk: list[T], limit: int) -> None:
        items = self._items
        while items and len(bulk) < limit:
            bulk.append(items.popleft())

    async def run(self) -> None:
        """Form bulks and run the handler until :meth:`close`; then wait for running calls."""
        size = self.bulk_size
        items = self._items
        async with trio.open_nursery() as nursery:
            while True:
                if self._resume_at:
                    await self._paused()
                while not items:
                    if self._closed:
                        return  # the nursery waits for running handler calls
                    await self._lot.park()
                bulk = [items.popleft()]
                if size > 1:
                    self._take(bulk, size)
                    if len(bulk) < size:
                        self._forming = bulk
                        try:
                            flushed_in_time = await self._fill(bulk, size)
                        finally:
                            self._forming = []
                        if self._closed:
                            self._on_unhandled(bulk)
                            continue
                        if not bulk:
                            continue  # every item of it was discarded meanwhile
                        if flushed_in_time:
                            self.stats.flushed_by_time += 1
                        else:
                            self.stats.flushed_by_size += 1
                    else:
                        self.stats.flushed_by_size += 1
                else:
                    self.stats.flushed_by_size += 1
                self.stats.bulk_sizes.observe(len(bulk))
                if self.concurrency == 1:
                    await self._call(bulk)
                else:
                    self._forming = bulk
                    try:
                        await self._slots.acquire()
                    finally:
                        self._forming = []
                    if not bulk:
                        self._slots.release()  # every item of it was discarded meanwhile
                        continue
                    if self._closed:
                        # Closed while this bulk waited for a slot: it was never started,
                        # so it goes back to its source like any buffered item.
                        self._slots.release()
                        self._on_unhandled(bulk)
                        continue
                    nursery.start_soon(self._call_and_release, bulk)

    async def _fill(self, bulk: list[T], size: int) -> bool:
        """Wait for more items until the bulk is full; return True if time ran out first."""
        deadline = trio.current_time() + self.flush_interval
        self._filling = True
        try:
            with trio.move_on_at(deadline) as scope:
                while len(bulk) < size and not self._closed and not self._flush_now:
                    await self._lot.park()
                    self._take(bulk, size)
        finally:
            flushed, self._filling, self._flush_now = self._flush_now, False, False
        return scope.cancelled_caught or flushed

    async def _call_and_release(self, bulk: list[T]) -> None:
        try:
            await self._call(bulk)
        finally:
            self._slots.release()

    async def _call(self, bulk: list[T]) -> None:
        stats = self.stats
        stats.running += 1
        self._running += 1
        if self._running == 1:
            self._idle = trio.Event()
        error: BaseException | None = None
        outcome = "cancelled"
        started = self._call_starts[id(bulk)] = time.perf_counter()
        try:
            try:
                await self.handler(bulk)
                outcome = "ok"
            except Exception as exc:
                error = exc
                outcome = "timeout" if isinstance(exc, HandlerTimeout) else "error"
        except BaseException:
            # Cancelled (shutdown past its grace period, connection lost) or interrupted:
            # the handler did not finish, so its items go back to their source.
            self._on_unhandled(bulk)
            raise
        finally:
            stats.durations[outcome].observe(time.perf_counter() - started)
            del self._call_starts[id(bulk)]
            stats.running -= 1
            self._running -= 1
            if self._running == 0:
                self._idle.set()
        self._on_done(bulk, error)
