"""``@app.on_started`` hooks: wait until every backend is up, then run them (docs/amqp.md,
"Startup errors and lifecycle hooks")."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from ._errors import StartupError

__all__ = ["run_started_hooks"]

log = logging.getLogger("trioworker")


class _Waits(Protocol):
    async def wait_up(self) -> None: ...


async def run_started_hooks(
    app: Any,
    hooks: Sequence[Callable[[Any], Awaitable[None]]],
    amqp: _Waits | None,
    shutdown_requested: trio.Event | None,
) -> StartupError | None:
    """Wait until ``amqp`` (if it runs) is connected with every route consuming, then run
    ``hooks`` in order; return the error of the first that fails (the app then stops
    gracefully and ``serve()`` raises it). A shutdown asked for while waiting skips them.
    """
    if not hooks or shutdown_requested is None:
        return None
    if amqp is not None:
        with trio.CancelScope() as waiting:

            async def cancel_on_shutdown() -> None:
                await shutdown_requested.wait()
                waiting.cancel()

            async with trio.open_nursery() as watch:
                watch.start_soon(cancel_on_shutdown)
                await amqp.wait_up()
                watch.cancel_scope.cancel()
        if waiting.cancelled_caught:
            return None
    for hook in hooks:
        try:
            await hook(app)
        except Exception as exc:
            name = getattr(hook, "__qualname__", repr(hook))
            log.error("on_started hook %s failed: %r; stopping the app", name, exc)
            error = StartupError(f"on_started hook {name} failed: {exc!r}")
            error.__cause__ = exc
            return error
    return None
