"""The timer backend: ``@app.every(seconds)`` runs a handler on a fixed schedule.

Shape::

    TimerBackend.run ── runs nursery ─────────── one task per run: handler(app)
                          └── ticks nursery ──── one tick loop per Timer

A tick loop wakes at ``start + k * seconds`` (``trio.current_time`` based), so a late
wake-up never pushes the following ticks back: the schedule does not drift. At each tick it
starts a run unless ``max_concurrency`` runs of that timer are still going, in which case
the tick is *skipped* (counted, never queued): a timer is "do this every N seconds", not "do
this N times", and queueing ticks behind a slow run would fire them back to back.

Runs live in their own nursery, outside the tick loops, so a graceful stop can end the
ticking at once and still give running handlers ``app.grace_period`` to finish.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._log_context import bind
from ..pipeline._backend import Health, slow_call
from ..pipeline._batcher import HandlerTimeout
from ..pipeline._handlers import Handler, adapt, handler_name

if TYPE_CHECKING:
    from ..pipeline import AppServices
    from ..pipeline._pools import Pool

__all__ = ["STUCK_MARGIN", "Timer", "TimerBackend"]

log = logging.getLogger("trioworker.timers")

#: Seconds past its ``timeout`` a run may still be going before ``health()`` calls it stuck.
#: The timeout cancels the run at once, so a run older than that ignores cancellation
#: (a shielded scope, a blocking call inside ``async def``).
STUCK_MARGIN = 1.0


@dataclasses.dataclass(eq=False)
class Timer:
    """A registered ``@app.every`` timer: its configuration and its counters.

    The counters are plain attributes for a metrics collector to read; they are only
    written from the trio thread, so reading them there needs no lock.
    """

    handler: Handler
    seconds: float
    run_at_startup: bool
    max_concurrency: int
    timeout: float | None
    name: str
    #: The named pool the handler runs in (``app.pool()``), if any: docs/pools.md.
    pool: str | None = None

    #: Runs started.
    runs: int = 0
    #: Runs that raised (timeouts included).
    failures: int = 0
    #: Runs cancelled by their ``timeout`` (also counted in ``failures``).
    timeouts: int = 0
    #: Ticks not run because ``max_concurrency`` runs were still going (or the loop woke
    #: up late, past whole periods).
    skipped: int = 0
    #: Runs cancelled at shutdown, past the app's grace period.
    cancelled: int = 0
    #: Runs going on right now.
    running: int = 0
    #: Seconds the last finished run took (whatever its outcome); None before the first.
    last_duration: float | None = None
    #: ``trio.current_time()`` of the next tick while the timer ticks, else None.
    next_tick: float | None = None
    #: run id -> ``trio.current_time()`` it started at, for the runs going on.
    _started_at: dict[int, float] = dataclasses.field(default_factory=dict, repr=False)
    #: Whether a skipped tick was logged at info since the last run started.
    _skip_logged: bool = dataclasses.field(default=False, repr=False)
    #: The pool named by ``pool``, resolved at registration.
    _runner: Pool | None = dataclasses.field(default=None, repr=False)


def _check_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class TimerBackend:
    """``app.timers``: the app's timers (``app.every`` registers them here).

    Active as soon as one timer is registered. ``timers`` lists them in registration order;
    ``get(name)`` finds one.
    """

    name = "timers"

    def __init__(self, app: AppServices) -> None:
        self.app = app
        self.timers: list[Timer] = []
        self._ids = itertools.count()
        self._ticks: trio.Nursery | None = None
        self._runs: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._running_total = 0
        self._idle = trio.Event()
        self._idle.set()

    # ------------------------------------------------------------ timers

    def every(
        self,
        seconds: float,
        *,
        run_at_startup: bool = False,
        max_concurrency: int = 1,
        timeout: float | None = None,
        name: str | None = None,
        pool: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register ``handler(app)`` to run every ``seconds``; see docs/timers.md.

        ``pool=`` runs a plain ``def`` handler in that named pool. In a *process* pool it
        is called without arguments, ``handler()``: the app cannot travel to a worker
        process (docs/pools.md). Bad arguments raise here, at registration, not when the
        app starts. The handler is returned unchanged.
        """
        period = _check_seconds(seconds, "seconds")
        limit = None if timeout is None else _check_seconds(timeout, "timeout")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"max_concurrency must be an int, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise TypeError(f"a timer handler must be callable, got {handler!r}")
            timer_name = name or handler_name(handler)
            if self.get(timer_name) is not None:
                raise ValueError(
                    f"a timer named {timer_name!r} is already registered; pass name= to "
                    "tell them apart"
                )
            timer = Timer(
                handler=handler,
                seconds=period,
                run_at_startup=bool(run_at_startup),
                max_concurrency=max_concurrency,
                timeout=limit,
                name=timer_name,
                pool=pool,
                _runner=None if pool is None else self._pool_for(handler, pool, timer_name),
            )
            self.timers.append(timer)
            if self._ticks is not None:
                self._ticks.start_soon(self._tick_loop, timer)
            else:
                self.app.start_backend(self)  # no-op unless the app runs without us
            return handler

        return register

    def _pool_for(self, handler: Handler, name: str, timer_name: str) -> Pool:
        pool = self.app.pools.get(name)
        what = f"timer {timer_name!r}"
        pool.check_handler(handler, what)
        if pool.kind == "process":
            try:
                inspect.signature(handler).bind()
            except TypeError:
                raise TypeError(
                    f"{what}: in process pool {name!r} the handler is called without "
                    "arguments (the app cannot travel to a worker process): define it as "
                    "`def handler() -> None`"
                ) from None
            except ValueError:
                pass  # no signature to read (a builtin): the call will tell
        return pool

    def get(self, name: str) -> Timer | None:
        """The timer called ``name``, or None."""
        for timer in self.timers:
            if timer.name == name:
                return timer
        return None

    # ----------------------------------------------------------- backend

    @property
    def active(self) -> bool:
        """True once a timer is registered."""
        return bool(self.timers)

    def health(self) -> Health:
        """Healthy unless a run is still going :data:`STUCK_MARGIN` s past its timeout;
        degraded while a run goes past its timeout or, without one, past the app's
        ``slow_handler_threshold``.

        A timer without a timeout is never unhealthy: a long run only skips ticks, which
        the ``skipped`` counter shows (and, past the threshold, ``/health`` as degraded).
        """
        now = trio.current_time()
        threshold = self.app.slow_handler_threshold
        problems: list[str] = []
        slow: list[str] = []
        for timer in self.timers:
            if not timer._started_at:
                continue
            age = now - min(timer._started_at.values())  # the oldest run
            if timer.timeout is not None and age > timer.timeout + STUCK_MARGIN:
                problems.append(
                    f"timer {timer.name!r}: a run is stuck for {age:.1f} s "
                    f"(timeout {timer.timeout:g} s)"
                )
            elif note := slow_call(timer.name, age, timer.timeout, threshold):
                slow.append(note)
        return Health(not problems, "; ".join(problems + slow), degraded=bool(slow))

    def handlers(self) -> list[tuple[str, Handler]]:
        """``(timer name, handler)`` of every timer, for the blocked-loop watchdog."""
        return [(timer.name, timer.handler) for timer in self.timers]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick every timer until :meth:`stop`; then drain the running handlers.

        After ``stop()`` no tick starts a run. Runs still going get ``app.grace_period``
        seconds; past it they are cancelled (a sync handler's thread is abandoned and ends
        on its own) and a warning names them.
        """
        stop = self._stop = trio.Event()
        if self.app.shutting_down:
            stop.set()  # stop() came before this task started (start_backend races it)
        try:
            async with trio.open_nursery() as runs:
                self._runs = runs
                async with trio.open_nursery() as ticks:
                    if not stop.is_set():
                        self._ticks = ticks
                        for timer in self.timers:
                            ticks.start_soon(self._tick_loop, timer)
                    task_status.started()
                    await stop.wait()
                    self._ticks = None
                    ticks.cancel_scope.cancel()
                await self._drain(runs)
        finally:
            self._runs = None
            self._stop = None

    def stop(self) -> None:
        """No more ticks; running handlers get the grace period (see :meth:`run`)."""
        self._ticks = None  # a timer registered from now on waits for the next serve
        if self._stop is not None:
            self._stop.set()

    # ----------------------------------------------------------- internals

    async def _drain(self, runs: trio.Nursery) -> None:
        grace = self.app.grace_period
        with trio.move_on_after(grace):
            await self._idle.wait()
        if self._running_total:
            names = sorted({t.name for t in self.timers if t.running})
            log.warning(
                "timer runs still going after the %.1f s grace period are cancelled: %s",
                grace,
                ", ".join(names),
            )
            runs.cancel_scope.cancel()

    async def _tick_loop(self, timer: Timer) -> None:
        bind(app=self.app.name, route=timer.name)  # log context of the loop and its runs
        period = timer.seconds
        start = trio.current_time()
        k = 0 if timer.run_at_startup else 1
        try:
            while True:
                # Computed from the start, not from the last wake-up: no drift.
                timer.next_tick = start + k * period
                await trio.sleep_until(timer.next_tick)
                if timer.running < timer.max_concurrency:
                    self._start_run(timer)
                else:
                    timer.skipped += 1
                    # Once per overrun at info, then debug: a timer that always overruns
                    # would otherwise fill the log.
                    level = logging.DEBUG if timer._skip_logged else logging.INFO
                    timer._skip_logged = True
                    log.log(
                        level,
                        "timer %r: tick skipped, %d run(s) still going (%d skipped so far)",
                        timer.name,
                        timer.running,
                        timer.skipped,
                    )
                k += 1
                late = trio.current_time() - (start + k * period)
                if late >= 0:
                    # The loop itself woke up past whole periods (a starved event loop):
                    # those ticks are gone, not owed.
                    missed = int(late // period) + 1
                    k += missed
                    timer.skipped += missed
                    log.info("timer %r: woke up late, %d tick(s) skipped", timer.name, missed)
        finally:
            timer.next_tick = None

    def _start_run(self, timer: Timer) -> None:
        assert self._runs is not None
        run_id = next(self._ids)
        timer.runs += 1
        timer.running += 1
        timer._skip_logged = False
        timer._started_at[run_id] = trio.current_time()
        self._running_total += 1
        if self._running_total == 1:
            self._idle = trio.Event()
        self._runs.start_soon(self._run_once, timer, run_id, name=f"timer {timer.name}")

    async def _run_once(self, timer: Timer, run_id: int) -> None:
        runner = timer._runner
        call = adapt(timer.handler, timeout=timer.timeout, pool=runner)
        args = () if runner is not None and runner.kind == "process" else (self.app,)
        started = timer._started_at[run_id]
        try:
            await call(*args)
        except HandlerTimeout:
            timer.failures += 1
            timer.timeouts += 1
            log.error(
                "timer %r: run did not finish within its %g s timeout; cancelled",
                timer.name,
                timer.timeout,
            )
        except Exception:
            timer.failures += 1
            log.exception("timer %r: run failed; the timer goes on", timer.name)
        except trio.Cancelled:
            timer.cancelled += 1
            raise
        finally:
            timer.last_duration = trio.current_time() - started
            del timer._started_at[run_id]
            timer.running -= 1
            self._running_total -= 1
            if self._running_total == 0:
                self._idle.set()
