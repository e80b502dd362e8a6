"""``client.advance()``: time travel for timers and the app's own sleeps, on MockClock.

pytest-trio's ``mock_clock`` fixture runs the test on :class:`trio.testing.MockClock`:
time stands still until it is moved (``autojump_threshold`` moves it whenever every task
is blocked). Jumping straight to the target would wake a timer once, late, and it would
count the ticks in between as skipped — not what a test of "runs every second" means. So
the clock is moved from deadline to deadline, and whatever is due at each runs at its
time before the next jump.
"""

from __future__ import annotations

import trio
import trio.testing

__all__ = ["advance_clock"]


async def advance_clock(seconds: float) -> None:
    """Move the MockClock ``seconds`` ahead, deadline by deadline (see the module)."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        raise RuntimeError(
            "client.advance() needs trio's MockClock: take pytest-trio's `mock_clock` "
            "fixture in the test (or run it with trio.run(..., clock=MockClock()))"
        )
    if not seconds >= 0:  # NaN too
        raise ValueError(f"advance({seconds!r}): seconds >= 0")
    target = trio.current_time() + seconds
    while True:
        await trio.testing.wait_all_tasks_blocked()
        now = trio.current_time()
        step = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if now + step >= target:
            clock.jump(max(0.0, target - now))
            await trio.testing.wait_all_tasks_blocked()
            return
        clock.jump(max(step, 0.0))
