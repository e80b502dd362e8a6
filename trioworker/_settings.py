"""Defaults read from the environment, in one place so the docs can list them."""

from __future__ import annotations

import os

FLUSH_INTERVAL_ENV = "TRIOWORKER_FLUSH_INTERVAL"
PREFETCH_ENV = "TRIOWORKER_PREFETCH"
GRACE_PERIOD_ENV = "TRIOWORKER_GRACE_PERIOD"

DEFAULT_FLUSH_INTERVAL = 60.0
DEFAULT_PREFETCH = 1024
DEFAULT_GRACE_PERIOD = 30.0


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"${name} must not be negative, got {raw!r}")
    return value


def flush_interval() -> float:
    """``$TRIOWORKER_FLUSH_INTERVAL`` seconds, default 60."""
    return _float(FLUSH_INTERVAL_ENV, DEFAULT_FLUSH_INTERVAL)


def prefetch() -> int:
    """``$TRIOWORKER_PREFETCH``, default 1024."""
    return int(_float(PREFETCH_ENV, DEFAULT_PREFETCH))


def grace_period() -> float:
    """``$TRIOWORKER_GRACE_PERIOD`` seconds, default 30."""
    return _float(GRACE_PERIOD_ENV, DEFAULT_GRACE_PERIOD)
