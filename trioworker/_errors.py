"""Errors of the framework itself (the AMQP client's live in :mod:`trioworker.amqp`)."""

from __future__ import annotations

__all__ = ["StartupError"]


class StartupError(RuntimeError):
    """The app could not start: an ``on_startup`` hook failed, or a backend could not come
    up (an HTTP port taken). Nothing was left running; ``serve()`` raises it unwrapped."""
