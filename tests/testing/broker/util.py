"""Waiting for the broker's state in its tests."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (fail after ``within`` s).

    The broker changes state in its connections' tasks, with no event a test could wait
    on, so this polls, briefly.
    """
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - see the docstring
            await trio.sleep(0.005)
