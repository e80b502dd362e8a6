"""Signals to a real worker process (tests/faults/worker_app.py, ``trio.run(app.serve)``).

SIGTERM / SIGINT: graceful stop. The promise (docs/amqp.md "Graceful shutdown"):
running handler calls finish within the grace period and are acknowledged, everything else
goes back to the queue — every message is either handled (once) or in the queue, never both,
never neither — and the process exits 0.

SIGKILL: nothing can be graceful, but nothing is lost either: unacknowledged messages are
requeued by the broker. A bulk the handler completed but whose ack had not left the process
is both handled and back in the queue (at least once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trioworker

from ._helpers import assert_accounted, declare, drain, fill, wait_settled

pytestmark = pytest.mark.broker

WORKER_SCRIPT = Path(__file__).with_name("worker_app.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
TOTAL = 2_000
GRACE_PERIOD = 10.0
#: Exit must come within the grace period plus this (startup of nothing, closing, slack).
EXIT_SLACK = 5.0


class WorkerProcess:
    """One ``worker_app.py`` subprocess and the files it writes."""

    def __init__(self, directory: Path, url: str, queue: str, name: str, **options: object):
        self.directory = directory
        self.results = directory / "results.txt"
        self.started = directory / "started.txt"
        self.log_path = directory / "worker.log"
        self.argv = [
            sys.executable, str(WORKER_SCRIPT), "--url", url, "--queue", queue,
            "--results", str(self.results), "--started", str(self.started), "--name", name,
            "--grace-period", str(GRACE_PERIOD),
        ]  # fmt: skip
        for key, value in options.items():
            self.argv += [f"--{key.replace('_', '-')}", str(value)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.signalled_at: float | None = None

    def start(self) -> None:
        env = dict(os.environ)
        # The same trioworker as this test process (a private checkout via PYTHONPATH too).
        package_root = Path(trioworker.__file__).resolve().parents[1]
        paths = [str(package_root), str(REPO_ROOT), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,  # a Ctrl-C of the test run is not the worker's
            )

    # ------------------------------------------------------------------ reading files

    @staticmethod
    def _lines(path: Path) -> list[list[int]]:
        if not path.exists():
            return []
        text = path.read_text()
        if not text.endswith("\n"):  # a partial last line: killed mid-write
            text = text[: text.rfind("\n") + 1]
        return [[int(x) for x in line.split()] for line in text.splitlines() if line]

    @property
    def completed_bulks(self) -> list[list[int]]:
        return self._lines(self.results)

    @property
    def started_bulks(self) -> list[list[int]]:
        return self._lines(self.started)

    @property
    def handled(self) -> list[int]:
        return [i for bulk in self.completed_bulks for i in bulk]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -------------------------------------------------------------------- control

    async def wait_handled(self, count: int, within: float = 60.0) -> None:
        with trio.move_on_after(within):
            while len(self.handled) < count:
                self._check_alive()
                await trio.sleep(0.05)
            return
        raise AssertionError(f"worker handled {len(self.handled)} < {count} in {within} s")

    async def wait_started(self, count: int, within: float = 60.0) -> None:
        with trio.move_on_after(within):
            while len(self.started_bulks) < count:
                self._check_alive()
                await trio.sleep(0.02)
            return
        raise AssertionError(f"worker started fewer than {count} bulks in {within} s")

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early with {self.proc.returncode}")

    def send(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.signalled_at = time.monotonic()
        self.proc.send_signal(signum)

    async def wait_exit(self, within: float) -> tuple[int, float]:
        """(exit status, seconds since the signal)."""
        assert self.proc is not None and self.signalled_at is not None
        with trio.move_on_after(within):
            while self.proc.poll() is None:  # noqa: ASYNC110 - a child process, no event
                await trio.sleep(0.02)
            return self.proc.returncode, time.monotonic() - self.signalled_at
        raise AssertionError(f"worker still running {within} s after the signal")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Collects workers; at teardown kills those still running and prints their logs
    (pytest shows them for failing tests)."""
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        worker.kill()
        print(f"----- {worker.log_path} (exit {worker.proc and worker.proc.returncode}) -----")
        print(worker.log())


async def start_worker(
    workers: list[WorkerProcess], directory: Path, url: str, queue: str, name: str, **options
) -> WorkerProcess:
    worker = WorkerProcess(directory, url, queue, name, **options)
    workers.append(worker)
    worker.start()
    return worker


def assert_graceful_exit(status: int, elapsed: float) -> None:
    assert status == 0, f"exit status {status}"
    assert elapsed < GRACE_PERIOD + EXIT_SLACK, f"took {elapsed:.1f} s to exit"


def assert_clean_log(worker: WorkerProcess) -> None:
    log = worker.log()
    assert "graceful shutdown" in log
    assert "Traceback" not in log
    assert " ERROR " not in log and " CRITICAL " not in log
    assert "serve() returned" in log
    # Every bulk the handler started was allowed to finish (none was cut short).
    assert worker.started_bulks == worker.completed_bulks


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_gracefully_without_loss_or_duplicates(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, tmp_path: Path, worker_factory,
    signum: signal.Signals,
) -> None:  # fmt: skip
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    worker = await start_worker(worker_factory, tmp_path, amqp_url, queue, app_name, sleep=0.5)

    await worker.wait_handled(200)
    worker.send(signum)
    status, elapsed = await worker.wait_exit(GRACE_PERIOD + EXIT_SLACK + 5)

    assert_graceful_exit(status, elapsed)
    await wait_settled(queue, amqp_vhost)
    remaining = await drain(amqp_url, queue)
    handled = worker.handled
    assert len(handled) >= 200
    assert len(handled) < TOTAL, "the worker finished everything: the signal came too late"
    assert_accounted(range(TOTAL), handled, remaining, allow_both=set())
    assert_clean_log(worker)
    assert f"{signum.name} received" in worker.log()


async def test_sigterm_while_a_handler_call_sleeps_lets_it_finish(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, tmp_path: Path, worker_factory
) -> None:
    """The bulk being handled when SIGTERM arrives completes, is acked, and is not requeued."""
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    worker = await start_worker(worker_factory, tmp_path, amqp_url, queue, app_name, sleep=3.0)

    await worker.wait_started(1)
    in_flight = worker.started_bulks[-1]
    assert worker.completed_bulks == [], "the first bulk finished already: not mid-sleep"
    worker.send(signal.SIGTERM)
    status, elapsed = await worker.wait_exit(GRACE_PERIOD + EXIT_SLACK + 5)

    assert_graceful_exit(status, elapsed)
    assert worker.completed_bulks == [in_flight], "the interrupted bulk must complete, alone"
    await wait_settled(queue, amqp_vhost)
    remaining = await drain(amqp_url, queue)
    assert not set(in_flight) & set(remaining), "the finished bulk was not acknowledged"
    assert_accounted(range(TOTAL), worker.handled, remaining, allow_both=set())
    assert len(remaining) == TOTAL - len(in_flight)
    assert_clean_log(worker)


async def test_sigkill_loses_nothing(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, tmp_path: Path, worker_factory
) -> None:
    """At least once: after SIGKILL every id is handled or back in the queue; only the bulk
    whose ack was still in flight may be both."""
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(TOTAL))
    worker = await start_worker(worker_factory, tmp_path, amqp_url, queue, app_name, sleep=0.5)

    await worker.wait_handled(200)
    worker.send(signal.SIGKILL)
    status, _ = await worker.wait_exit(10)
    assert status == -signal.SIGKILL

    await wait_settled(queue, amqp_vhost)  # the broker requeued the unacknowledged
    remaining = await drain(amqp_url, queue)
    completed = worker.completed_bulks
    handled = worker.handled
    assert_accounted(range(TOTAL), handled, remaining, allow_both=set(completed[-1]))
    both = set(handled) & set(remaining)
    print(f"handled={len(handled)} remaining={len(remaining)} handled-and-requeued={len(both)}")
