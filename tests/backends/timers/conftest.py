"""Fixtures for the timer tests.

``timers_of(app)`` runs an app's :class:`~trioworker.backends.timers.TimerBackend` on its own,
through the backend contract (``run``/``stop``), without the AMQP backend: that is what lets
the schedule tests use trio's ``MockClock`` (``autojump_clock``) and be exact and instant.
The broker tests run whole apps with ``open_app`` and reuse the framework's ``broker`` and
``make_app`` fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trioworker import App
from trioworker.backends.timers import TimerBackend


class Running:
    """A timer backend running in a nursery; ``await stop()`` stops it and waits for it."""

    def __init__(self, backend: TimerBackend, nursery: trio.Nursery) -> None:
        self.backend = backend
        self.done = trio.Event()
        self.stopped_at: float | None = None
        self._nursery = nursery

    async def stop(self) -> float:
        """Stop the backend, wait until ``run()`` returned; return how long that took."""
        began = trio.current_time()
        self.backend.stop()
        with trio.move_on_after(30) as waited:  # virtual seconds on the MockClock
            await self.done.wait()
        if waited.cancelled_caught:
            self._nursery.cancel_scope.cancel()  # or the fixture's nursery waits forever
            raise AssertionError("the timer backend did not stop within 30 s")
        assert self.stopped_at is not None
        return self.stopped_at - began


@pytest.fixture
def offline_app(amqp_url: str) -> App:
    """An app that is never served (no connection is made): a home for timers."""
    return App(amqp_url=amqp_url, name="timer-tests", grace_period=5.0)


@pytest.fixture
def timers_of() -> Callable[[App], Any]:
    @asynccontextmanager
    async def run(app: App) -> AsyncIterator[Running]:
        async with trio.open_nursery() as nursery:
            running = Running(app.timers, nursery)

            async def serve(task_status: trio.TaskStatus[None]) -> None:
                try:
                    await app.timers.run(task_status=task_status)
                finally:
                    running.stopped_at = trio.current_time()
                    running.done.set()

            await nursery.start(serve)
            try:
                yield running
            finally:
                await running.stop()

    return run
