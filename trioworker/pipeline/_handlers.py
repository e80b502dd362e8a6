"""Adapting user handlers: sync or async, with an optional timeout."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._batcher import HandlerTimeout

__all__ = ["Handler", "adapt", "handler_name"]

Handler = Callable[..., Any]


def is_async(handler: Handler) -> bool:
    """True for ``async def`` functions (and callables whose ``__call__`` is one)."""
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - callable objects
    )


def adapt(handler: Handler, *, timeout: float | None = None) -> Callable[..., Awaitable[Any]]:
    """Return an async callable running ``handler`` with the given ``timeout``.

    A plain ``def`` handler runs in a worker thread (``trio.to_thread.run_sync``) so it
    cannot block the event loop — the connection's heartbeats and acks keep flowing. A
    timed-out sync handler cannot be interrupted: its thread is abandoned (it runs to
    completion in the background) and the bulk gets the ``on_exception`` action.
    """
    if is_async(handler):
        call = handler
    else:

        async def call(*args: Any) -> Any:
            return await trio.to_thread.run_sync(handler, *args, abandon_on_cancel=True)

    if timeout is None:
        return call

    async def with_timeout(*args: Any) -> Any:
        with trio.move_on_after(timeout) as scope:
            return await call(*args)
        if scope.cancelled_caught:
            raise HandlerTimeout(f"handler did not finish within {timeout} s")
        return None  # pragma: no cover - unreachable: the block returned

    return with_timeout


def handler_name(handler: object) -> str:
    """A route's default name: the handler's qualified name, without the ``f.<locals>.``
    prefix of a handler defined inside a function (it would end up in every metric label
    and log line while saying nothing useful)."""
    qualname = str(getattr(handler, "__qualname__", None) or repr(handler))
    return qualname.rsplit("<locals>.", 1)[-1]
