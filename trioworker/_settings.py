"""Defaults read from the environment, in one place so the docs can list them."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .amqp import default_urls, split_urls

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


BLOCKED_LOOP_THRESHOLD_ENV = "TRIOWORKER_BLOCKED_LOOP_THRESHOLD"
SLOW_HANDLER_THRESHOLD_ENV = "TRIOWORKER_SLOW_HANDLER_THRESHOLD"
DEFAULT_BLOCKED_LOOP_THRESHOLD = 1.0
DEFAULT_SLOW_HANDLER_THRESHOLD = 60.0


def _threshold(name: str, argument: float | None, default: float, what: str) -> float | None:
    """Seconds: ``argument`` if given, else ``$name``, else ``default``; 0 (or infinity)
    turns the check off, which is returned as None."""
    if argument is None:
        value = _float(name, default)
        source = f"${name}"
    elif isinstance(argument, bool) or not isinstance(argument, int | float):
        raise TypeError(f"{what} must be a number of seconds (0: off), got {argument!r}")
    else:
        value = float(argument)
        source = what
    if math.isnan(value) or value < 0:
        raise ValueError(f"{source} must be a number of seconds >= 0 (0: off), got {value!r}")
    return None if value == 0 or math.isinf(value) else value


def blocked_loop_threshold(argument: float | None = None) -> float | None:
    """``App(blocked_loop_threshold=)``, else ``$TRIOWORKER_BLOCKED_LOOP_THRESHOLD``, else
    1 s: how long the event loop may be blocked before the watchdog warns. None: off."""
    return _threshold(
        BLOCKED_LOOP_THRESHOLD_ENV,
        argument,
        DEFAULT_BLOCKED_LOOP_THRESHOLD,
        "blocked_loop_threshold",
    )


def slow_handler_threshold(argument: float | None = None) -> float | None:
    """``App(slow_handler_threshold=)``, else ``$TRIOWORKER_SLOW_HANDLER_THRESHOLD``, else
    60 s: how long a handler call of a route without ``timeout`` may run before ``/health``
    says degraded. None: off."""
    return _threshold(
        SLOW_HANDLER_THRESHOLD_ENV,
        argument,
        DEFAULT_SLOW_HANDLER_THRESHOLD,
        "slow_handler_threshold",
    )


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


# ------------------------------------------------------------------ the broker's URLs

AMQP_URL_ENV = "TRIOWORKER_AMQP_URL"  # the name trioworker.amqp.connect() reads too
AMQP_SHUFFLE_ENV = "TRIOWORKER_AMQP_SHUFFLE"


def amqp_urls(argument: str | Sequence[str] | None) -> tuple[list[str], str]:
    """The default connection's URLs — ``App(amqp_url=)`` (a URL, comma-separated URLs or
    a list), else ``$TRIOWORKER_AMQP_URL`` (comma-separated), else the local broker — and
    where they came from, for errors."""
    if isinstance(argument, str) and argument.strip():
        return split_urls(argument), "amqp_url"
    if argument is not None and not isinstance(argument, str):
        return list(argument), "amqp_url"
    from_env = bool(os.environ.get(AMQP_URL_ENV))
    return default_urls(), f"${AMQP_URL_ENV}" if from_env else "the default URL"


def amqp_shuffle() -> bool:
    """``$TRIOWORKER_AMQP_SHUFFLE``: try the nodes in a random order (1/0, true/false,
    yes/no, on/off); default off (in the order given)."""
    raw = os.environ.get(AMQP_SHUFFLE_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"${AMQP_SHUFFLE_ENV} must be 1 or 0 (true/false, yes/no), got {raw!r}")
