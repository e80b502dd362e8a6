"""How a served app tells the CLI benchmarks how many messages it handled (stdlib only).

``bench_cli.py`` launches ``trioworker run`` / ``faststream run`` and must learn, from
outside the process tree, when the first and the last message were handled. The handlers
of the benchmark apps (``cli_app.py``, ``startup_app.py``, ``startup_faststream_app.py``)
write one line ``"<pid> <n>\\n"`` per handler call to a named pipe whose path is in
``$BENCH_HANDLED_FIFO``:

- a pipe, not a file polled for its size: the harness sleeps in ``select`` until a line
  arrives, so it takes no CPU from the two cores the workers and the broker share, and it
  sees the line the moment it is written;
- a *named* pipe, because the supervisor of ``--workers N`` starts its children with only
  stdin/stdout/stderr open: an inherited descriptor would not reach them, the environment
  does;
- lines shorter than ``PIPE_BUF`` are written atomically, so the lines of several worker
  processes never interleave; the pid says which process handled them (the harness reads
  each worker's CPU the first time it hears from it).

The queue's message count over AMQP could not say this: it counts ready messages only, so
it reaches 0 while up to ``prefetch`` messages per worker are still unhandled.
"""

from __future__ import annotations

import os
import time

ENV = "BENCH_HANDLED_FIFO"


class HandledWriter:
    """The app's end: ``handled(n)`` after each handler call (one ``write`` syscall)."""

    def __init__(self, path: str | None = None) -> None:
        path = path or os.environ.get(ENV)
        if not path:
            raise RuntimeError(f"${ENV} is not set: run this app through bench_cli.py")
        # Blocking on purpose: the harness opened the read end first, so this returns at
        # once, and a write never fails with EAGAIN (the harness drains the pipe).
        self._fd = os.open(path, os.O_WRONLY)
        self._pid = os.getpid()

    def handled(self, count: int) -> None:
        os.write(self._fd, b"%d %d\n" % (self._pid, count))


class HandledReader:
    """The harness's end: creates the FIFO; ``select`` on it, then :meth:`read` the lines."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own write end keeps the pipe from reporting end-of-file (readable forever,
        # a busy loop) between a worker closing it and the next one opening it.
        self._keep_open = os.open(path, os.O_WRONLY)
        self._buffer = b""
        self.total = 0
        #: pid -> time.perf_counter() of that process's first line
        self.first_seen: dict[int, float] = {}

    def fileno(self) -> int:
        """For ``select``: readable once a line (or part of one) arrived."""
        return self._fd

    def read(self) -> list[tuple[int, int]]:
        """The complete ``(pid, count)`` lines that arrived so far (maybe none)."""
        try:
            self._buffer += os.read(self._fd, 65536)
        except BlockingIOError:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        now = time.perf_counter()
        out: list[tuple[int, int]] = []
        for line in lines:
            pid, count = (int(x) for x in line.split())
            self.first_seen.setdefault(pid, now)
            self.total += count
            out.append((pid, count))
        return out

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._keep_open)
        os.unlink(self.path)
