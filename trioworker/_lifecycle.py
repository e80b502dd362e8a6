"""``@app.on_started`` hooks: wait until every backend is up, then run them (docs/amqp.md,
"Startup errors and lifecycle hooks")."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import trio

from ._errors import StartupError

__all__ = ["leaves_of", "run_started_hooks", "watch_signals"]

log = logging.getLogger("trioworker")


class _Waits(Protocol):
    async def wait_up(self) -> None: ...


class _Stoppable(Protocol):
    @property
    def shutting_down(self) -> bool: ...

    def shutdown(self) -> None: ...


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


async def watch_signals(app: _Stoppable, scope: trio.CancelScope) -> None:
    """SIGINT/SIGTERM: the first asks ``app`` for a graceful stop; the next cancels
    ``scope`` (what is left of the shutdown), as a user pressing Ctrl-C twice expects."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not app.shutting_down:
                log.info("%s received: graceful shutdown (send again to force)", name)
                app.shutdown()
            else:
                log.warning("%s received again: cancelling what is left", name)
                scope.cancel()
                return


def leaves_of(error: BaseException) -> Iterator[BaseException]:
    """The non-group exceptions inside ``error`` (itself, if it is not a group)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves_of(inner)
    else:
        yield error
