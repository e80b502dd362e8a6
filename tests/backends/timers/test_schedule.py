"""The timer backend on trio's MockClock (``autojump_clock``): exact and instant.

Each test runs ``app.timers`` on its own through the backend contract (see conftest), records
``trio.current_time()`` inside the handler and compares with the schedule the docs promise.
Every test takes the ``autojump_clock`` fixture (pytest-trio runs the test on that clock
only when it is an argument). With it, time only moves when every task is blocked, so the
instants are exact: a run due at t0 + 10 starts at exactly t0 + 10.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from trioworker import App


class Runs:
    """What a timer handler saw: start and end instants, and the most runs at once."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.now_running = 0
        self.most_at_once = 0

    async def __call__(self, app: App, work: float = 0.0) -> None:
        self.starts.append(trio.current_time())
        self.now_running += 1
        self.most_at_once = max(self.most_at_once, self.now_running)
        try:
            await trio.sleep(work)
            self.ends.append(trio.current_time())
        finally:
            self.now_running -= 1


def relative(times: list[float], t0: float) -> list[float]:
    return [round(t - t0, 9) for t in times]


def handler(runs: Runs, work: float = 0.0) -> Callable[[App], Any]:
    async def tick(app: App) -> None:
        await runs(app, work)

    return tick


async def test_ticks_on_a_fixed_schedule(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    runs = Runs()
    offline_app.every(10)(handler(runs))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(55)
    assert relative(runs.starts, t0) == [10, 20, 30, 40, 50]
    timer = offline_app.timers.get("tick")
    assert timer is not None
    assert (timer.runs, timer.failures, timer.skipped) == (5, 0, 0)
    assert timer.last_duration == 0


async def test_run_time_does_not_push_the_schedule_back(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    # Each run takes 3 s of a 10 s period: "sleep 10 after each run" would start them at
    # 10, 23, 36, 49; a fixed schedule starts them at 10, 20, 30, 40.
    runs = Runs()
    offline_app.every(10, name="slowish")(handler(runs, work=3))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(45)
    assert relative(runs.starts, t0) == [10, 20, 30, 40]
    assert offline_app.timers.get("slowish").last_duration == 3  # type: ignore[union-attr]


async def test_a_slow_run_never_overlaps_the_next_ticks_are_skipped(
    offline_app: App, timers_of: Any, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioworker.timers")
    runs = Runs()
    offline_app.every(1, name="slow")(handler(runs, work=2.5))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(10.5)
    # Runs at 1 (until 3.5), 4 (until 6.5), 7, 10; the ticks at 2, 3, 5, 6, 8, 9 are skipped.
    assert relative(runs.starts, t0) == [1, 4, 7, 10]
    assert runs.most_at_once == 1
    timer = offline_app.timers.get("slow")
    assert timer is not None
    assert (timer.runs, timer.skipped) == (4, 6)
    skips = [r for r in caplog.records if "tick skipped" in r.getMessage()]
    assert len(skips) == 6
    # One info line per overrun, the rest at debug.
    assert [r.levelno for r in skips] == [logging.INFO, logging.DEBUG] * 3


async def test_max_concurrency_lets_runs_overlap(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    runs = Runs()
    offline_app.every(1, max_concurrency=2, name="overlapping")(handler(runs, work=3.5))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(10.5)
    # 1 and 2 overlap; 3 and 4 find two running; 5 starts after 1 ended (4.5), 6 after 2.
    assert relative(runs.starts, t0) == [1, 2, 5, 6, 9, 10]
    assert runs.most_at_once == 2
    assert offline_app.timers.get("overlapping").skipped == 4  # type: ignore[union-attr]


async def test_an_exception_is_logged_and_the_timer_goes_on(
    offline_app: App, timers_of: Any, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    @offline_app.every(5)
    async def flaky(app: App) -> None:
        calls.append(trio.current_time())
        if len(calls) % 2:
            raise RuntimeError(f"bad luck #{len(calls)}")

    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(26)
    assert relative(calls, t0) == [5, 10, 15, 20, 25]
    timer = offline_app.timers.get("flaky")  # the handler's name, without "f.<locals>."
    assert timer is not None
    assert (timer.runs, timer.failures, timer.timeouts) == (5, 3, 0)
    errors = [r for r in caplog.records if r.name == "trioworker.timers"]
    assert [r.levelno for r in errors] == [logging.ERROR] * 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in errors)
    assert "bad luck #3" in caplog.text  # the traceback is in the log


async def test_run_at_startup(offline_app: App, timers_of: Any, autojump_clock: MockClock) -> None:
    runs = Runs()
    offline_app.every(10, run_at_startup=True, name="eager")(handler(runs))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(25)
    assert relative(runs.starts, t0) == [0, 10, 20]


async def test_timeout_cancels_a_run_and_the_timer_goes_on(
    offline_app: App, timers_of: Any, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    runs = Runs()
    offline_app.every(10, timeout=2, name="bounded")(handler(runs, work=5))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(21)
    # Both cancelled 2 s in (at 12, and at 22 while the stop drained it): never at their end.
    assert relative(runs.starts, t0) == [10, 20]
    assert runs.ends == []
    timer = offline_app.timers.get("bounded")
    assert timer is not None
    assert (timer.runs, timer.failures, timer.timeouts) == (2, 2, 2)
    assert timer.last_duration == 2
    assert "did not finish within its 2 s timeout" in caplog.text


async def test_health_reports_a_run_stuck_past_its_timeout(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    @offline_app.every(10, timeout=2)
    async def stubborn(app: App) -> None:
        with trio.CancelScope(shield=True):  # ignores the timeout's cancellation
            await trio.sleep(20)

    async with timers_of(offline_app) as running:
        await trio.sleep(12.5)  # the run started at 10, its timeout passed at 12
        assert running.backend.health().ok
        await trio.sleep(1)  # 3.5 s into the run: past timeout + 1 s margin
        health = running.backend.health()
        assert not health.ok
        assert "stubborn" in health.detail
        assert "timeout 2 s" in health.detail
        await trio.sleep(17)  # the run ended at 30: healthy again
        assert running.backend.health().ok
        timer = running.backend.timers[0]
        # It finished without ever seeing the cancellation: a success, 20 s long.
        assert (timer.failures, timer.timeouts, timer.last_duration) == (0, 0, 20)


async def test_a_late_wake_up_drops_the_missed_ticks(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    starts: list[float] = []

    @offline_app.every(10, name="starving")
    async def starving(app: App) -> None:
        starts.append(trio.current_time())
        if len(starts) == 1:
            # Stands for a loop blocked by sync code: time jumps 25 s without a checkpoint.
            autojump_clock.jump(25)

    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(41)
    # The tick due at 20 runs late, at 35; the one due at 30 is gone; then back on schedule.
    assert relative(starts, t0) == [10, 35, 40]
    assert offline_app.timers.get("starving").skipped == 1  # type: ignore[union-attr]


async def test_stop_lets_a_running_tick_finish_within_the_grace_period(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    runs = Runs()
    offline_app.every(10, name="finishing")(handler(runs, work=3))
    t0 = trio.current_time()
    async with timers_of(offline_app) as running:
        await trio.sleep(11)  # the run started at 10, ends at 13
        took = await running.stop()
        await trio.sleep(30)  # no tick after stop()
    assert took == 2  # waited for the run (grace period is 5 s)
    assert relative(runs.starts, t0) == [10]
    assert relative(runs.ends, t0) == [13]
    timer = offline_app.timers.get("finishing")
    assert timer is not None
    assert (timer.runs, timer.cancelled, timer.running, timer.next_tick) == (1, 0, 0, None)


async def test_stop_cancels_a_tick_past_the_grace_period(
    offline_app: App, timers_of: Any, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    runs = Runs()
    offline_app.every(10, name="endless")(handler(runs, work=100))
    async with timers_of(offline_app) as running:
        await trio.sleep(11)
        took = await running.stop()
    assert took == offline_app.grace_period == 5
    assert runs.ends == []
    timer = offline_app.timers.get("endless")
    assert timer is not None
    assert (timer.cancelled, timer.running, timer.last_duration) == (1, 0, 6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "grace period" in warnings[0].getMessage()
    assert "endless" in warnings[0].getMessage()


async def test_stop_with_nothing_running_returns_at_once(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    offline_app.every(10, name="idle")(handler(Runs()))
    async with timers_of(offline_app) as running:
        await trio.sleep(3)
        assert await running.stop() == 0


async def test_a_timer_registered_while_running_starts_at_once(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    first, second = Runs(), Runs()
    offline_app.every(10, name="first")(handler(first))
    t0 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(5)
        offline_app.every(10, run_at_startup=True, name="second")(handler(second))
        await trio.sleep(21)
    assert relative(first.starts, t0) == [10, 20]
    assert relative(second.starts, t0) == [5, 15, 25]


async def test_the_backend_can_run_again_after_a_stop(
    offline_app: App, timers_of: Any, autojump_clock: MockClock
) -> None:
    runs = Runs()
    offline_app.every(10, name="again")(handler(runs))
    async with timers_of(offline_app) as running:
        await trio.sleep(15)
        await running.stop()
    t1 = trio.current_time()
    async with timers_of(offline_app):
        await trio.sleep(15)
    assert relative(runs.starts, t1)[-1] == 10
    assert len(runs.starts) == 2
