"""Defaults read from the environment, in one place so the docs can list them."""

from __future__ import annotations

import os

FLUSH_INTERVAL_ENV = "TRIOWORKER_FLUSH_INTERVAL"
PREFETCH_ENV = "TRIOWORKER_PREFETCH"
GRACE_PERIOD_ENV = "TRIOWORKER_GRACE_PERIOD"
HTTP_HOST_ENV = "TRIOWORKER_HTTP_HOST"
HTTP_PORT_ENV = "TRIOWORKER_HTTP_PORT"

DEFAULT_FLUSH_INTERVAL = 60.0
DEFAULT_PREFETCH = 1024
DEFAULT_GRACE_PERIOD = 30.0
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080


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


def http_host() -> str:
    """``$TRIOWORKER_HTTP_HOST``, default 127.0.0.1 (not reachable from outside unless asked)."""
    return os.environ.get(HTTP_HOST_ENV) or DEFAULT_HTTP_HOST


def http_port() -> int | None:
    """``$TRIOWORKER_HTTP_PORT``, or None when unset.

    None rather than the default port, because setting the variable also switches the HTTP
    server on (see docs/http.md, "When does the server run").
    """
    raw = os.environ.get(HTTP_PORT_ENV)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${HTTP_PORT_ENV} must be a port number, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"${HTTP_PORT_ENV} must be between 0 and 65535, got {raw!r}")
    return value
