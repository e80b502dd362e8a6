"""Run one app in this process: ``trioworker run`` with one worker, and each supervised child.

``app.serve()`` owns SIGINT/SIGTERM once it runs (graceful stop, a second signal cancels
what is left). Before that — while the user's module imports and the startup hooks run — a
signal must not turn into a traceback wall or be lost, so this module covers that gap:

- during the import a signal interrupts it (like Ctrl-C would) and the process exits 0,
  since nothing had started;
- from then until ``serve()`` reports the app started, a signal is only noted, and the app
  is asked to shut down as soon as it is up (a second one kills the process: something in
  startup is stuck and the user wants out).

Under the supervisor the child also holds one end of a socket pair (``--supervisor-fd``):
it writes one line when the app is ready (with its grace period, so the supervisor knows how
long a graceful stop may take), and end-of-file on it means the supervisor died — the child
then stops gracefully instead of living on as an orphan nobody will ever signal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

import trio

from .._app import App
from .._errors import StartupError
from ._discovery import DiscoveryError, load_app
from ._exit import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

__all__ = ["run_worker"]

log = logging.getLogger("trioworker.cli")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class _StopBeforeStart(BaseException):
    """Raised by the signal handler to interrupt the import of the user's module."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt_import(signum: int, frame: FrameType | None) -> None:
    raise _StopBeforeStart(signum)


class _PendingStop:
    """Notes a signal that came after the import but before ``serve()`` took over."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        # Second signal while startup is still running: it is stuck; die by the signal.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install(handler: SignalHandler) -> dict[int, SignalHandler]:
    return {signum: signal.signal(signum, handler) for signum in _STOP_SIGNALS}


def run_worker(
    target: str, *, factory: bool = False, app_dir: str | None = None,
    supervisor_fd: int | None = None,
) -> int:  # fmt: skip
    """Import the app named by ``target``, serve it until a signal; the exit status.

    0 after a graceful stop (or a signal before the app started) unless the app asked for
    another with ``app.shutdown(exit_code=)``, 1 for a
    :class:`~trioworker.StartupError` (its message logged), 2 if the app cannot be found.
    """
    previous = _install(_interrupt_import)
    try:
        try:
            app = load_app(target, factory=factory, app_dir=app_dir)
            pending = _PendingStop()
            _install(pending)
        except DiscoveryError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
        except _StopBeforeStart as stop:
            log.info(
                "%s received before the app started; exiting", signal.Signals(stop.signum).name
            )
            return EXIT_OK
        try:
            trio.run(_serve, app, pending, supervisor_fd)
        except StartupError as exc:
            log.error("the app could not start: %s", exc)
            return EXIT_FAILURE
        except BaseExceptionGroup as group:
            startup = _lone(group, StartupError)
            if startup is None:
                raise
            log.error("the app could not start: %s", startup)
            return EXIT_FAILURE
        if app.exit_code:
            log.info("the app stopped with exit status %d", app.exit_code)
        return app.exit_code  # EXIT_OK unless the app asked for another
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _lone(group: BaseExceptionGroup[BaseException], kind: type[Exception]) -> BaseException | None:
    """The single ``kind`` leaf of ``group`` if that is all it holds (nurseries wrap)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        else:
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 and isinstance(leaves[0], kind) else None


async def _serve(app: App, pending: _PendingStop, supervisor_fd: int | None) -> None:
    link = None
    if supervisor_fd is not None:
        link = trio.socket.from_stdlib_socket(socket.socket(fileno=supervisor_fd))
    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[App]) -> None:
            await app.serve(task_status=task_status)
            nursery.cancel_scope.cancel()  # the supervisor link has nothing left to watch

        await nursery.start(serve)
        if pending.signum is not None:
            name = signal.Signals(pending.signum).name
            log.info("%s received during startup: graceful shutdown", name)
            app.shutdown()
        if link is not None:
            nursery.start_soon(partial(_supervisor_link, app, link))


async def _supervisor_link(app: App, link: trio.socket.SocketType) -> None:
    """Tell the supervisor we are ready; stop gracefully if it goes away."""
    with link:
        ready = {"ready": True, "pid": os.getpid(), "grace_period": app.grace_period}
        try:
            await link.send((json.dumps(ready) + "\n").encode())
            while await link.recv(4096):
                pass
        except OSError:
            pass
    if not app.shutting_down:
        log.warning("the supervisor went away: graceful shutdown")
        app.shutdown()
