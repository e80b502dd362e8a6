"""One worker process of the supervisor: spawn it, learn when it is ready, stop or kill it.

A child is ``python -m trioworker run MODULE:ATTR --workers 1 ...`` plus
``--supervisor-fd N``: one end of a Unix socket pair. The child writes one JSON line on it
when its app has started (the supervisor learns the child is *ready*, and its grace
period); end-of-file tells each side that the other is gone.

Children run in their own session (``start_new_session``): a Ctrl-C in the terminal goes to
the terminal's foreground process group — the supervisor only — so the supervisor alone
decides the order of the shutdown and no child gets the signal twice.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
from collections.abc import Sequence

import trio

from ._exit import describe_status

__all__ = ["Child"]

log = logging.getLogger("trioworker.supervisor")


class Child:
    """A worker process, started by :meth:`run` and gone when it returns.

    :meth:`stop` and :meth:`kill` may be called at any time — before the process exists
    (it is then signalled as soon as it does), or after it exited (nothing happens) — and
    :meth:`stop` signals at most once, because a second SIGTERM would tell the app to
    cancel its in-flight handlers.
    """

    def __init__(self, worker: int, argv: Sequence[str]) -> None:
        self.worker = worker
        self.argv = list(argv)
        self.pid: int | None = None
        self.returncode: int | None = None
        #: Set when the app inside reported that it started.
        self.ready = trio.Event()
        self.ready_at: float | None = None
        #: The app's grace period, from its ready message.
        self.grace_period: float | None = None
        #: True once we asked it to stop (so its exit is expected, not a crash).
        self.stop_requested = False
        self._stop_signal: int = signal.SIGTERM
        self._signalled = False
        self._process: trio.Process | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a graceful stop (the app's own handling of ``signum``)."""
        self.stop_requested = True
        self._stop_signal = signum
        if self._process is not None and not self._signalled and self.alive:
            self._signalled = True
            self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no grace. The broker requeues whatever the child had not acked."""
        self.stop_requested = True
        if self._process is not None and self.alive:
            self._process.kill()

    async def run(self) -> int:
        """Start the process, wait until it exits; its return code (-N: killed by signal N).

        Cancellation kills the process (trio's rule for a process we still wait on): a
        supervisor that is itself being torn down must not leave orphans behind.
        """
        ours, theirs = socket.socketpair()
        try:
            argv = [*self.argv, "--supervisor-fd", str(theirs.fileno())]
            self._process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        self.pid = self._process.pid
        log.info(
            "worker %d started (pid %d)", self.worker, self.pid,
            extra={"worker": self.worker, "worker_pid": self.pid},
        )  # fmt: skip
        if self.stop_requested:  # asked to stop while it was being spawned
            self.stop(self._stop_signal)
        link = trio.socket.from_stdlib_socket(ours)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_link, link)
                await self._process.wait()
                nursery.cancel_scope.cancel()
        finally:
            link.close()
            if self._process.returncode is None:
                self._process.kill()
                with trio.CancelScope(shield=True):
                    await self._process.wait()
        self.returncode = returncode = self._process.returncode
        assert returncode is not None
        return returncode

    async def _read_link(self, link: trio.socket.SocketType) -> None:
        buffer = b""
        while b"\n" not in buffer:
            try:
                data = await link.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
        try:
            message = json.loads(buffer.partition(b"\n")[0])
            self.grace_period = float(message["grace_period"])
        except (ValueError, KeyError, TypeError):
            log.warning("worker %d sent a ready message we cannot read: %r", self.worker, buffer)
        self.ready_at = trio.current_time()
        self.ready.set()
        log.info(
            "worker %d (pid %s) is ready", self.worker, self.pid,
            extra={"worker": self.worker, "worker_pid": self.pid},
        )  # fmt: skip
        try:
            while await link.recv(4096):  # keep our end open until the child exits
                pass
        except OSError:
            pass

    def describe(self) -> str:
        """``"worker 2 (pid 123)"``."""
        return f"worker {self.worker} (pid {self.pid})"

    def status(self) -> str:
        return describe_status(self.returncode) if self.returncode is not None else "running"
