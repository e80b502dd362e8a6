"""A handler that keeps failing: how long to back off, and logs that summarise.

Without it a handler raising on every message is a hot loop: the message is requeued, the
broker hands it straight back, the handler fails again — thousands of calls and a traceback
per delivery every second. A :class:`FailureWatch` turns a run of failures into

- a pause before the next bulk that grows with the run (``backoff_delay``: 0.1 s doubling
  to ``cap``, jittered), reset by the first success;
- one error with its traceback for the first failure of a run, then at most one summary
  line every ``summary_every`` seconds ("route 'h': 120 failures in the last 10 s, last:
  ValueError(...)"), and a line when the run ends.

It knows nothing about where items come from; the source decides whether to pause (a route
that sends failed messages to a delay queue has nothing to back off from).
"""

from __future__ import annotations

import logging

import trio

from ._backoff import backoff_delay

__all__ = ["FailureWatch"]


class FailureWatch:
    """Counts consecutive failing calls of one handler (see the module docstring)."""

    __slots__ = (
        "_base",
        "_cap",
        "_every",
        "_last",
        "_log",
        "_streak",
        "_unreported",
        "_window_start",
        "what",
    )

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        base: float = 0.1,
        cap: float = 30.0,
        summary_every: float = 10.0,
    ) -> None:
        self.what = what
        self._log = logger
        self._base = base
        self._cap = cap
        self._every = summary_every
        self._streak = 0
        self._unreported = 0
        self._window_start = 0.0
        self._last: BaseException | None = None

    @property
    def streak(self) -> int:
        """Failures since the last success."""
        return self._streak

    def failed(self, error: BaseException, size: int) -> float:
        """Record a failed call on ``size`` items; return the pause before the next one."""
        now = trio.current_time()
        self._streak += 1
        self._last = error
        if self._streak == 1:
            self._log.error(
                "%s: handler failed on a bulk of %d: %r (further failures are summarised"
                " every %.0f s)",
                self.what,
                size,
                error,
                self._every,
                exc_info=error,
            )
            self._window_start = now
            self._unreported = 0
        else:
            self._unreported += 1
            if now - self._window_start >= self._every:
                self._summary(now)
        return backoff_delay(self._streak - 1, base=self._base, cap=self._cap)

    def succeeded(self) -> None:
        """A call returned: the run of failures (if any) is over."""
        if self._streak:
            if self._unreported:
                self._summary(trio.current_time())
            self._log.info("%s: handler succeeded after %d failures", self.what, self._streak)
            self._streak = 0

    def flush(self) -> None:
        """Log the failures not summarised yet (the source stops)."""
        if self._unreported:
            self._summary(trio.current_time())

    def _summary(self, now: float) -> None:
        self._log.error(
            "%s: %d failures in the last %.0f s, last: %r",
            self.what,
            self._unreported,
            now - self._window_start,
            self._last,
        )
        self._window_start = now
        self._unreported = 0
