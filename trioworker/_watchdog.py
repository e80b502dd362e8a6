"""The blocked-loop watchdog: a warning, naming the route, when a handler blocks the loop.

An ``async def`` handler that calls something blocking — ``time.sleep``, a sync database
driver, a long pure-Python loop — holds the whole event loop: heartbeats stop (the broker
drops the connection after a few), acknowledgements, HTTP requests and ``/health`` wait,
every other route stalls; and the call itself is still recorded as ``ok``. Trio cannot
preempt it. What can be done is to see it, and say where.

How (cost: two wake-ups per threshold period; stacks are read only during a block):

- A trio task, the *ticker*, wakes every ``threshold / 4`` and records when it expects its
  next wake-up (``due``, on ``time.monotonic()``). It can only run when the loop does.
- A thread (``trio.to_thread.run_sync`` in the app's nursery: it ends with the app, never
  an orphan) sleeps until ``due + threshold``. If ``due`` has not moved by then, the loop
  is blocked: the thread reads the loop thread's stack (``sys._current_frames()``), finds
  the innermost frame running a registered handler (each backend lists its routes with
  ``handlers()``), logs one WARNING naming the route and the line, and counts the block.
- When the loop runs again, the ticker sees how late it woke: the block's length (at
  least). It logs a second line with it and observes it in a histogram.

A sync ``def`` handler runs in a worker thread: it never blocks the loop, so it is never
reported. A block outside any handler (a startup hook, a library's own code) is reported
with the route ``<none>``; one that ended before the thread could look (a C call holding
the GIL all along) as ``<unknown>``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Protocol

import trio
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from . import _settings
from ._log_context import bind
from .metrics._families import add_histogram
from .pipeline._backend import Backend, Health
from .pipeline._histogram import Histogram

__all__ = ["BLOCK_BOUNDS", "NO_ROUTE", "UNSEEN", "Block", "BlockedLoopWatchdog"]

log = logging.getLogger("trioworker.watchdog")

#: Block durations (seconds), from a short stall to a handler that never yields.
BLOCK_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: The route label of a block outside every route's handler.
NO_ROUTE = "<none>"
#: The route label of a block that was over before the watchdog could look where it was.
UNSEEN = "<unknown>"
#: Seconds ``/health`` shows the last block for, once it is over.
RECENT = 60.0


class _Watched(Protocol):
    """What the watchdog reads of the app: its name (logs) and its routes' handlers."""

    @property
    def name(self) -> str: ...

    def handlers(self) -> list[tuple[str, Callable[..., Any]]]: ...


@dataclass
class Block:
    """One time the loop was blocked longer than the threshold."""

    #: ``time.monotonic()`` the ticker should have run at: the block began before.
    due: float
    #: The route(s) whose handler was running (``"a or b"`` when they share a function);
    #: None outside every handler, or when the watchdog did not see it.
    route: str | None
    #: ``file:line`` of the handler's frame (else of the innermost frame); "" if unseen.
    where: str
    #: Seconds it lasted (at least), once over.
    seconds: float | None = None
    #: ``time.monotonic()`` it ended at, once over.
    ended: float | None = None

    @property
    def label(self) -> str:
        """The ``route`` label of the metrics."""
        if self.route is not None:
            return self.route
        return NO_ROUTE if self.where else UNSEEN

    def describe(self) -> str:
        place = f"in route {self.route!r}" if self.route is not None else "outside any route"
        if not self.where:
            return "(over before the watchdog could see where)"
        return f"{place} ({self.where})"


def code_of(handler: Callable[..., Any]) -> CodeType | None:
    """The code object a running ``handler`` shows on the stack: that of the user's
    function behind wrappers (``__wrapped__``), partials, bound methods, or a callable
    object's ``__call__``; None for what has none (a builtin)."""
    target: Any = handler
    for _ in range(16):  # unwrap layers; a cycle of __wrapped__ cannot loop us forever
        if isinstance(target, functools.partial):
            target = target.func
        elif hasattr(target, "__wrapped__"):
            target = target.__wrapped__
        else:
            break
    target = getattr(target, "__func__", target)
    code = getattr(target, "__code__", None)
    if code is None and not inspect.isroutine(target):
        call = getattr(type(target), "__call__", None)  # noqa: B004 - callable objects
        code = getattr(getattr(call, "__func__", call), "__code__", None)
    return code if isinstance(code, CodeType) else None


def _virtual_time() -> bool:
    """True on trio's ``MockClock``. Checked without importing ``trio.testing`` (that
    takes a tenth of a second): if nobody imported it, the clock is not one of its."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)


def _location(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class BlockedLoopWatchdog:
    """``app.watchdog``: see the module docstring.

    ``threshold``: seconds, as ``App(blocked_loop_threshold=)`` takes it — None reads
    ``$TRIOWORKER_BLOCKED_LOOP_THRESHOLD`` (default 1 s), 0 turns the watchdog off; the
    attribute is then the resolved value, None when off.

    Counters for ``app.metrics`` (:meth:`collect`): ``blocks`` per route label and
    ``durations`` (a histogram per route label); ``last`` is the last block seen.
    """

    def __init__(self, app: _Watched, threshold: float | None = None) -> None:
        self.threshold = _settings.blocked_loop_threshold(threshold)
        self._app = app
        # Taken by the ticker once per tick and by the thread when it sees a block (never
        # while logging): they agree on which block is which, and the counters are never
        # written by both at once.
        self._lock = threading.Lock()
        self._due = 0.0
        self._current: Block | None = None  # seen by the thread, not over yet
        self.blocks: dict[str, int] = {}
        self.durations: dict[str, Histogram] = {}
        self.last: Block | None = None

    # ----------------------------------------------------------- running

    async def run(self) -> None:
        """Watch until cancelled (the app's nursery ends). Does nothing when off, or on a
        ``MockClock`` (virtual time says nothing about the real loop)."""
        threshold = self.threshold
        if threshold is None or _virtual_time():
            return
        bind(app=self._app.name)
        interval = threshold / 4
        stop = threading.Event()
        watch = functools.partial(
            trio.to_thread.run_sync,
            self._watch,
            threading.get_ident(),
            threshold,
            stop,
            limiter=trio.CapacityLimiter(1),  # not a token of the handlers' thread pool
        )
        self._due = time.monotonic() + interval
        self._current = None  # a block cut short by the last serve's end is over
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick, interval, threshold, stop)
            nursery.start_soon(watch, name="blocked-loop watchdog")

    async def _tick(self, interval: float, threshold: float, stop: threading.Event) -> None:
        try:
            while True:
                await trio.sleep(interval)
                now = time.monotonic()
                with self._lock:
                    late = now - self._due
                    self._due = now + interval
                    block, self._current = self._current, None
                    if late <= threshold and block is None:
                        continue
                    if block is None:  # over before the thread looked
                        block = Block(now - late, None, "")
                        self.blocks[UNSEEN] = self.blocks.get(UNSEEN, 0) + 1
                    block.seconds, block.ended = late, now
                    self.last = block
                    histogram = self.durations.get(block.label)
                    if histogram is None:
                        histogram = self.durations[block.label] = Histogram(BLOCK_BOUNDS)
                    histogram.observe(late)
                log.warning(
                    "event loop was blocked for %.2f s %s",
                    late,
                    block.describe(),
                    extra={"route": block.label, "blocked_seconds": round(late, 3)},
                )
        finally:
            stop.set()  # the thread returns, so the nursery (and the app) can end

    def _watch(self, loop_thread: int, threshold: float, stop: threading.Event) -> None:
        """The thread: wait for ``due + threshold``; a ``due`` that did not move is a block."""
        try:
            while True:
                due = self._due
                wait = due + threshold - time.monotonic()
                current = self._current
                if current is not None and current.due == due:
                    wait = threshold / 4  # reported: poll until the ticker runs again
                if wait > 0:
                    if stop.wait(wait):
                        return
                    continue
                self._report(loop_thread, due)
        except Exception:  # a watchdog failing must never take the app down with it
            log.exception("the blocked-loop watchdog failed; it stops watching")

    def _report(self, loop_thread: int, due: float) -> None:
        frame = sys._current_frames().get(loop_thread)
        route, where = self._locate(frame) if frame is not None else (None, "")
        del frame  # a frame keeps every local of the stack alive
        block = Block(due, route, where or "?")
        with self._lock:
            if self._due != due:
                return  # the loop ran meanwhile: the ticker reports it (unseen)
            self._current = block
            self.blocks[block.label] = self.blocks.get(block.label, 0) + 1
        # Not under the lock: a log handler may take its time (or need the loop), and the
        # ticker must never wait for one.
        blocked = time.monotonic() - due
        log.warning(
            "event loop blocked for %.2f s %s",
            blocked,
            block.describe(),
            extra={"route": block.label, "blocked_seconds": round(blocked, 3)},
        )

    def _locate(self, frame: FrameType) -> tuple[str | None, str]:
        """The route whose handler the innermost matching frame runs, and where it is."""
        codes = self._handler_codes()
        current: FrameType | None = frame
        while current is not None:
            names = codes.get(current.f_code)
            if names:
                return " or ".join(names), _location(current)
            current = current.f_back
        return None, _location(frame)

    def _handler_codes(self) -> dict[CodeType, list[str]]:
        """Built when a block is seen (rare), so registering routes costs nothing here.

        Read from this thread while the loop is blocked: the route lists do not change
        meanwhile (only the loop changes them).
        """
        codes: dict[CodeType, list[str]] = {}
        for name, handler in self._app.handlers():
            code = code_of(handler)
            if code is not None and name not in codes.setdefault(code, []):
                codes[code].append(name)
        return codes

    # ------------------------------------------------------ health, metrics

    def health(self) -> dict[str, Health]:
        """``{"event_loop": ...}`` for ``/health`` while a block is recent (its detail says
        which), else empty. Always ok: a loop that answers is not blocked now."""
        with self._lock:
            block = self.last
        if block is None or block.ended is None or time.monotonic() - block.ended > RECENT:
            return {}
        ago = time.monotonic() - block.ended
        detail = f"blocked for {block.seconds or 0:.2f} s {ago:.0f} s ago {block.describe()}"
        return {"event_loop": Health(True, detail)}

    def collect(self) -> Iterator[Metric]:
        """The watchdog's metric families, for ``app.metrics`` (a ``MetricsSource``)."""
        blocked = CounterMetricFamily(
            "trioworker_event_loop_blocked",
            "Times the event loop was blocked longer than the watchdog's threshold, by the "
            "route whose handler was running (<none>: no handler; <unknown>: not seen).",
            labels=["route"],
        )
        seconds = HistogramMetricFamily(
            "trioworker_event_loop_blocked_seconds",
            "How long each block of the event loop lasted (at least), by route.",
            labels=["route"],
        )
        with self._lock:
            for route, count in sorted(self.blocks.items()):
                blocked.add_metric([route], count)
            for route, histogram in sorted(self.durations.items()):
                add_histogram(seconds, [route], histogram)
        yield blocked
        yield seconds


def listings(backends: Iterable[Backend]) -> list[tuple[str, Callable[..., Any]]]:
    """Every ``(route name, handler)`` the backends list (those that have ``handlers()``:
    it is optional in the backend contract)."""
    found: list[tuple[str, Callable[..., Any]]] = []
    for backend in list(backends):
        listing = getattr(backend, "handlers", None)
        if callable(listing):
            found.extend(listing())
    return found
