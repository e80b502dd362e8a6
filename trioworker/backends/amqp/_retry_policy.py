"""``Retry``: how often and how late a failed message is handled again.

Only the policy lives here (what to retry, how many times, how long to wait); the mechanism
— a confirmed republish to a delay queue whose TTL dead-letters it back — is the backend's
(``_retrying.py``). Keeping the policy a small frozen value makes it testable on its own and
shareable between routes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

__all__ = ["Retry"]


@dataclasses.dataclass(frozen=True)
class Retry:
    """Retry failed messages with delays, then dead-letter them.

    Arguments:
        attempts: handlings in all, the first included: ``attempts=3`` handles a message at
            most three times (two retries). At least 1 (1: never retry, dead-letter at once).
        delays: seconds before retry *k* is ``delays[k-1]``; the last delay repeats for
            later retries. Each distinct value is one delay queue on the broker.
        on: exception types that are retried (default: every ``Exception``).
        never: exception types that are never retried, even if they match ``on``: the
            message goes to its dead-letter queue at once (a malformed message will not
            get better).
        jitter: spread of the delays: a retry waits between ``d`` and ``d * (1 + jitter)``
            seconds (so retries of many messages that failed together do not all come back
            in the same instant). ``0`` for exact delays. Part of the delay queue's
            arguments (its TTL is ``d * (1 + jitter)``): changing it needs the delay queues
            deleted (docs/retries.md).
    """

    attempts: int = 3
    delays: Sequence[float] = (1.0, 10.0, 60.0)
    on: tuple[type[BaseException], ...] = (Exception,)
    never: tuple[type[BaseException], ...] = ()
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry(attempts={self.attempts!r}): at least 1 (the first handling)")
        delays = tuple(float(d) for d in self.delays)
        if not delays:
            raise ValueError("Retry(delays=...) needs at least one delay")
        if any(not math.isfinite(d) or d < 0 for d in delays):
            raise ValueError(f"Retry(delays={self.delays!r}): delays are finite seconds >= 0")
        object.__setattr__(self, "delays", delays)
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 10:
            raise ValueError(f"Retry(jitter={self.jitter!r}): a fraction between 0 and 10")
        for field in ("on", "never"):
            types = getattr(self, field)
            if isinstance(types, type):
                types = (types,)
            types = tuple(types)
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
                raise TypeError(f"Retry({field}=...) takes exception types")
            object.__setattr__(self, field, types)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before handling attempt number ``attempt`` (2 is the first retry)."""
        if attempt < 2:
            raise ValueError("attempt 1 is the first handling: there is no delay before it")
        delays = tuple(self.delays)
        return delays[min(attempt - 2, len(delays) - 1)]

    def retries(self, error: BaseException | None) -> bool:
        """Whether a message whose handler raised ``error`` may be retried at all (``None``:
        the handler asked for the retry itself, ``message.retry()``)."""
        if error is None:
            return True
        if isinstance(error, self.never):
            return False
        return isinstance(error, self.on)

    def exhausted(self, attempt: int) -> bool:
        """True when handling number ``attempt`` was the last one allowed."""
        return attempt >= self.attempts

    @property
    def distinct_delays(self) -> tuple[float, ...]:
        """The delay values, each once, in order: one delay queue per value."""
        return tuple(dict.fromkeys(self.delays))
