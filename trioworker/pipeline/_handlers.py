"""Adapting user handlers: sync or async, in a named pool or not, with an optional timeout."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ._batcher import HandlerTimeout

__all__ = ["Handler", "adapt", "handler_name"]

Handler = Callable[..., Any]


class Runner(Protocol):
    """Where a sync handler runs when a route names a pool (a ``Pool``, ``_pools.py``)."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...


def is_async(handler: Handler) -> bool:
    """True for ``async def`` functions (and callables whose ``__call__`` is one)."""
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - callable objects
    )


def adapt(
    handler: Handler, *, timeout: float | None = None, pool: Runner | None = None
) -> Callable[..., Awaitable[Any]]:
    """Return an async callable running ``handler`` with the given ``timeout``.

    A plain ``def`` handler runs in a worker thread (``trio.to_thread.run_sync``) so it
    cannot block the event loop — the connection's heartbeats and acks keep flowing — or,
    with ``pool``, in that pool (its threads or worker processes; the arguments must then
    pickle, see docs/pools.md). A timed-out sync handler in a thread cannot be interrupted:
    its thread is abandoned (it runs to completion in the background); one in a worker
    process is killed with it. Either way the call raises :class:`HandlerTimeout`.
    """
    if pool is not None:
        run = pool.run

        async def call(*args: Any) -> Any:
            return await run(handler, *args)

    elif is_async(handler):
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
