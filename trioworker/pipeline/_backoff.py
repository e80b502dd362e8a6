"""Backoff between retries: exponential, capped, jittered."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 10.0) -> float:
    """Exponential backoff with jitter: ``base * 2**attempt`` capped, times U(0.5, 1).

    The jitter spreads the reconnects of many workers after a broker restart, so they do
    not all arrive in the same instant.
    """
    delay: float = min(cap, base * (2 ** min(attempt, 30)))
    return delay * random.uniform(0.5, 1.0)
