"""``trioworker run --workers N``: N worker processes, one supervisor that orders them.

Why subprocesses running ``python -m trioworker run ... --workers 1`` rather than
:mod:`multiprocessing` with ``spawn``: a child is then exactly the single-worker CLI — one
code path to run an app, tested on its own — and nothing has to be pickled (an App holds
sockets, locks and closures). Its exit status is a plain process status (a signal is -N,
what we log), it can be put in its own session so a terminal's Ctrl-C does not reach it,
and trio can wait on it without a thread. ``spawn`` would also start a fresh interpreter,
so it would buy nothing but multiprocessing's extra machinery (resource tracker, pipes,
the parent's process group).

The supervisor never imports the app. Everything is one trio nursery:

- a signal task: the first SIGINT/SIGTERM is forwarded (once) to every child, which stops
  gracefully; if they are not all gone after the longest grace period they reported plus
  :data:`STOP_MARGIN`, they are killed. A second signal kills them at once;
- one task per worker slot that keeps a child running: a child that exits without having
  been asked to is restarted after an exponential backoff (reset once a child stayed up
  for :data:`STABLE_AFTER` seconds), and the exit is logged with its status or signal name;
- a child that exits 1 or 2 (a :class:`~trioworker.StartupError`, a bad ``MODULE:ATTR``)
  before it ever became ready would fail the same way again: the supervisor stops the
  others and exits with that status instead of restart-looping. The first child is started
  alone and the others only once it is ready, so such an error is reported once, not N
  times.

The exit status is 0 only if every worker slot's last child exited 0.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

import trio

from ._child import Child
from ._exit import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

__all__ = ["STABLE_AFTER", "STOP_MARGIN", "Supervisor", "restart_delay"]

log = logging.getLogger("trioworker.supervisor")

#: Seconds past the children's grace period before a graceful stop turns into SIGKILL
#: (the app closes connections and runs shutdown hooks after the grace period).
STOP_MARGIN = 10.0
#: A child that stayed up this long after it was ready resets the restart backoff.
STABLE_AFTER = 30.0
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A child that never got ready and exited with one of these will not do better next time.
_CANNOT_START = (EXIT_FAILURE, EXIT_USAGE)


def restart_delay(failures: int) -> float:
    """0.5 s after the first crash, doubling per crash in a row, at most 30 s."""
    return float(min(FIRST_RESTART_DELAY * 2 ** max(failures - 1, 0), MAX_RESTART_DELAY))


class Supervisor:
    """Keeps ``workers`` children of ``worker_argv`` running until a signal.

    ``default_grace_period`` bounds a graceful stop of children that have not reported
    theirs yet. With ``reload=True`` (one worker, ``--reload``) :meth:`reload` restarts the
    children, and a child that fails waits for the next change instead of a backoff.
    """

    def __init__(
        self, worker_argv: Sequence[str], workers: int, *, default_grace_period: float,
        reload: bool = False,
    ) -> None:  # fmt: skip
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._argv = list(worker_argv)
        self._workers = workers
        self._default_grace = default_grace_period
        self._reload = reload
        self._children: dict[int, Child] = {}
        self._final: dict[int, int] = {}
        self._failure: int | None = None
        self._stopping = trio.Event()
        self._first_settled = trio.Event()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self) -> int:
        """Run until every child is gone; the supervisor's exit status."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._watch_signals)
            async with trio.open_nursery() as slots:
                slots.start_soon(self._keep_running, 1)
                await self._first_settled.wait()
                if not self._stopping.is_set():
                    for worker in range(2, self._workers + 1):
                        slots.start_soon(self._keep_running, worker)
            nursery.cancel_scope.cancel()  # the signal watcher and the stop deadline
        return self.exit_status()

    def exit_status(self) -> int:
        if self._failure is not None:
            return self._failure
        statuses = list(self._final.values())
        return EXIT_OK if statuses and all(s == 0 for s in statuses) else EXIT_FAILURE

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop every child gracefully (as the first SIGINT/SIGTERM does)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._first_settled.set()
        self._changed.set()
        for child in self._children.values():
            child.stop(signum)
        if self._nursery is not None:
            self._nursery.start_soon(self._kill_after_deadline)

    def reload(self) -> None:
        """Restart every child now (the code changed); no backoff."""
        if self._stopping.is_set():
            return
        self._changed.set()
        self._changed = trio.Event()
        for child in self._children.values():
            child.stop(signal.SIGTERM)

    def kill(self) -> None:
        for child in self._children.values():
            child.kill()

    async def _watch_signals(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._stopping.is_set():
                    log.info(
                        "%s received: stopping %d worker(s) gracefully (send again to kill them)",
                        name, len(self._alive()),
                    )  # fmt: skip
                    self.stop(signum)
                else:
                    log.warning("%s received again: killing the workers", name)
                    self.kill()

    def _alive(self) -> list[Child]:
        return [c for c in self._children.values() if c.returncode is None]

    async def _kill_after_deadline(self) -> None:
        graces = [c.grace_period or self._default_grace for c in self._alive()]
        deadline = max(graces, default=self._default_grace) + STOP_MARGIN
        await trio.sleep(deadline)
        for child in self._alive():
            log.error(
                "%s did not stop within %.0f s: killing it", child.describe(), deadline,
                extra={"worker": child.worker, "worker_pid": child.pid},
            )  # fmt: skip
            child.kill()

    async def _keep_running(self, worker: int) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                child = Child(worker, self._argv)
                self._children[worker] = child
                changed = self._changed
                if worker == 1:
                    self._settle_first_when_ready(child)
                returncode = await child.run()
                self._final[worker] = returncode
                if self._stopping.is_set():
                    self._log_stopped(child)
                    return
                if child.stop_requested:  # reloaded: start the new code at once
                    log.info("%s stopped for a reload (%s)", child.describe(), child.status())
                    continue
                if not child.ready.is_set() and returncode in _CANNOT_START:
                    if self._reload:
                        log.error("%s could not start (%s); waiting for a change",
                                  child.describe(), child.status())  # fmt: skip
                        await changed.wait()
                        continue
                    log.error(
                        "%s could not start (%s): stopping, not restarting",
                        child.describe(), child.status(), extra={"worker": worker},
                    )  # fmt: skip
                    if self._failure is None:
                        self._failure = returncode
                    self.stop()
                    return
                failures = self._next_failures(child, failures)
                delay = restart_delay(failures)
                if self._reload:
                    log.warning("%s exited unexpectedly (%s); waiting for a change",
                                child.describe(), child.status())  # fmt: skip
                    await changed.wait()
                    continue
                log.warning(
                    "%s exited unexpectedly (%s); restarting it in %.1f s",
                    child.describe(), child.status(), delay,
                    extra={"worker": worker, "worker_pid": child.pid, "returncode": returncode},
                )  # fmt: skip
                with trio.move_on_after(delay):
                    await self._stopping.wait()
        finally:
            if worker == 1:
                self._first_settled.set()

    def _settle_first_when_ready(self, child: Child) -> None:
        assert self._nursery is not None

        async def settle() -> None:
            await child.ready.wait()
            self._first_settled.set()

        self._nursery.start_soon(settle)

    @staticmethod
    def _next_failures(child: Child, failures: int) -> int:
        if child.ready_at is not None and trio.current_time() - child.ready_at >= STABLE_AFTER:
            return 1
        return failures + 1

    def _log_stopped(self, child: Child) -> None:
        returncode = child.returncode
        if (
            returncode is not None
            and -returncode in (signal.SIGINT, signal.SIGTERM)
            and not child.ready.is_set()
        ):
            # Signalled while still importing: it had taken no work, so it stopped cleanly.
            self._final[child.worker] = EXIT_OK
            returncode = EXIT_OK
        level = logging.INFO if returncode == EXIT_OK else logging.WARNING
        log.log(
            level, "%s stopped (%s)", child.describe(), child.status(),
            extra={"worker": child.worker, "worker_pid": child.pid, "returncode": child.returncode},
        )  # fmt: skip
