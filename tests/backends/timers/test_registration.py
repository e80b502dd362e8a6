"""Registering timers: bad arguments fail at once with a clear error and register nothing;
sync handlers run in a worker thread; the backend is active only with timers."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
import trio

from tests.support.broker import eventually
from trioworker import App


async def noop(app: App) -> None:
    pass


async def value(v: int) -> int:
    return v


@pytest.mark.parametrize("seconds", [0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_seconds_must_be_positive_and_finite(offline_app: App, seconds: float) -> None:
    with pytest.raises(ValueError, match=r"seconds must be a finite number of seconds > 0"):
        offline_app.every(seconds)
    assert offline_app.timers.timers == []
    assert not offline_app.timers.active


@pytest.mark.parametrize("seconds", ["5", None, True, [1]])
def test_seconds_must_be_a_number(offline_app: App, seconds: Any) -> None:
    with pytest.raises(TypeError, match=r"seconds must be a number of seconds"):
        offline_app.every(seconds)
    assert offline_app.timers.timers == []


@pytest.mark.parametrize("timeout", [0, -2, math.nan, math.inf])
def test_timeout_must_be_positive_and_finite(offline_app: App, timeout: float) -> None:
    with pytest.raises(ValueError, match=r"timeout must be a finite number of seconds > 0"):
        offline_app.every(1, timeout=timeout)
    assert offline_app.timers.timers == []


@pytest.mark.parametrize("limit", [0, -1])
def test_max_concurrency_must_be_at_least_one(offline_app: App, limit: int) -> None:
    with pytest.raises(ValueError, match=r"max_concurrency must be at least 1"):
        offline_app.every(1, max_concurrency=limit)


def test_max_concurrency_must_be_an_int(offline_app: App) -> None:
    with pytest.raises(TypeError, match=r"max_concurrency must be an int"):
        offline_app.every(1, max_concurrency=1.5)  # type: ignore[arg-type]


def test_the_handler_must_be_callable(offline_app: App) -> None:
    with pytest.raises(TypeError, match=r"must be callable"):
        offline_app.every(1)("not a function")
    assert offline_app.timers.timers == []


def test_names_are_unique(offline_app: App) -> None:
    offline_app.every(1)(noop)
    with pytest.raises(ValueError, match=r"a timer named 'noop' is already registered"):
        offline_app.every(2)(noop)
    offline_app.every(2, name="noop-slow")(noop)
    assert [t.name for t in offline_app.timers.timers] == ["noop", "noop-slow"]


def test_registration_returns_the_handler_and_records_the_options(offline_app: App) -> None:
    assert not offline_app.timers.active
    assert offline_app.every(2.5, run_at_startup=True, max_concurrency=3, timeout=1)(noop) is noop
    assert offline_app.timers.active
    timer = offline_app.timers.get("noop")
    assert timer is not None
    assert (timer.seconds, timer.run_at_startup, timer.max_concurrency, timer.timeout) == (
        2.5,
        True,
        3,
        1.0,
    )
    assert (timer.runs, timer.failures, timer.skipped, timer.last_duration) == (0, 0, 0, None)
    assert offline_app.timers.get("missing") is None


async def test_a_sync_handler_runs_in_a_worker_thread(offline_app: App, timers_of: Any) -> None:
    seen: list[tuple[App, bool]] = []

    @offline_app.every(0.1, run_at_startup=True)
    def blocking(app: App) -> None:
        time.sleep(0.05)  # would stall every other task if it ran on the trio thread
        seen.append((app, threading.current_thread() is threading.main_thread()))

    async with timers_of(offline_app):
        await eventually(lambda: value(len(seen)), lambda n: n >= 3)
    assert all(app is offline_app and not on_main for app, on_main in seen)


async def test_a_sync_handler_past_its_timeout_is_abandoned(
    offline_app: App, timers_of: Any
) -> None:
    release = threading.Event()
    finished = threading.Event()

    @offline_app.every(60, run_at_startup=True, timeout=0.2, name="stuck-thread")
    def stuck(app: App) -> None:
        release.wait(10)
        finished.set()

    timer = offline_app.timers.get("stuck-thread")
    assert timer is not None
    async with timers_of(offline_app) as running:
        await eventually(lambda: value(timer.timeouts), lambda n: n == 1)
        assert timer.running == 0  # the trio side is done; the thread is on its own
        with trio.fail_after(5):
            assert await running.stop() < 1  # nothing left to wait for
    assert not finished.is_set()
    release.set()
    assert finished.wait(10)
