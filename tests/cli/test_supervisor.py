"""``--workers N`` as real processes with real signals against the real broker.

The CLI runs with ``--log-format json`` here, so every test also checks that each line of
the combined stderr of the supervisor and its workers is one JSON object.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._helpers import APP, CLIProcess, cli_env, fill, handled_ids, wait_no_consumers

pytestmark = pytest.mark.broker


@pytest.fixture
def cli_processes() -> Iterator[list[CLIProcess]]:
    processes: list[CLIProcess] = []
    yield processes
    for process in processes:
        process.kill()
        print(f"----- {process.log_path} -----\n{process.log()}")


@pytest.fixture
def queue(amqp_url: str, unique_name: Callable[..., str], cleanup_queues: Any) -> str:
    name = cleanup_queues.add(unique_name("q"))
    fill(amqp_url, name, 500)
    return name


def start(processes: list[CLIProcess], tmp_path: Path, queue: str, *args: str,
          **env: str) -> CLIProcess:  # fmt: skip
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    variables = {"CLI_TEST_QUEUE": queue, "CLI_TEST_RESULTS": str(results), **env}
    process = CLIProcess(tmp_path, *args, "--log-format", "json", env=cli_env(**variables))
    processes.append(process)
    return process


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def messages(records: list[dict[str, Any]], pid: int) -> list[str]:
    return [r["message"] for r in records if r["pid"] == pid]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_worker_gracefully(
    cli_processes: list[CLIProcess], tmp_path: Path, queue: str, signum: signal.Signals
) -> None:
    cli = start(cli_processes, tmp_path, queue, APP, "--workers", "2")
    pids = cli.ready_pids(2)
    cli.send(signum)
    assert cli.wait() == 0, cli.log()

    records = cli.records()
    for record in records:
        assert {"time", "level", "logger", "message", "pid"} <= record.keys(), record
    for pid in pids:
        assert any("graceful shutdown" in m for m in messages(records, pid)), pid
        assert gone(pid)
    stopped = [r for r in records if r["message"].endswith("stopped (exit status 0)")]
    assert sorted(r["worker"] for r in stopped) == [1, 2]
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")]


def test_factory_runs_under_the_supervisor(
    cli_processes: list[CLIProcess], tmp_path: Path, queue: str, amqp_url: str
) -> None:
    cli = start(
        cli_processes, tmp_path, queue, "tests.cli.app_module:make_app", "--factory",
        "--workers", "2", CLI_TEST_SLEEP="0",
    )  # fmt: skip
    cli.ready_pids(2)
    deadline = time.monotonic() + 60
    while len(handled_ids(tmp_path / "results")) < 500 and time.monotonic() < deadline:
        time.sleep(0.1)
    cli.send(signal.SIGTERM)
    assert cli.wait() == 0, cli.log()
    assert sorted(handled_ids(tmp_path / "results")) == list(range(500))
    assert wait_no_consumers(amqp_url, queue) == 0


def test_a_killed_worker_is_replaced_and_the_signal_is_logged(
    cli_processes: list[CLIProcess], tmp_path: Path, queue: str
) -> None:
    cli = start(cli_processes, tmp_path, queue, APP, "--workers", "2")
    first, second = cli.ready_pids(2)
    os.kill(second, signal.SIGKILL)
    pids = cli.ready_pids(3)
    assert pids[2] not in (first, second)
    cli.send(signal.SIGTERM)
    assert cli.wait() == 0, cli.log()  # the last worker of each slot stopped cleanly

    records = cli.records()
    restarts = [r for r in records if "exited unexpectedly" in r["message"]]
    assert len(restarts) == 1, restarts
    assert restarts[0]["worker_pid"] == second and restarts[0]["returncode"] == -signal.SIGKILL
    assert "(signal SIGKILL); restarting it in" in restarts[0]["message"]
    assert restarts[0]["level"] == "WARNING"


def test_a_second_signal_kills_the_workers(
    cli_processes: list[CLIProcess], tmp_path: Path, queue: str
) -> None:
    """The workers' handlers sleep for 60 s with a grace period of 120 s: only the second
    signal makes the supervisor exit soon, with a failure status."""
    cli = start(
        cli_processes, tmp_path, queue, APP, "--workers", "2",
        CLI_TEST_SLEEP="60", TRIOWORKER_GRACE_PERIOD="120",
    )  # fmt: skip
    pids = cli.ready_pids(2)
    time.sleep(1.0)  # the first bulks are in their handlers
    cli.send(signal.SIGTERM)
    time.sleep(1.0)
    assert cli.proc.poll() is None, "stopped although handlers were still running"
    cli.send(signal.SIGTERM)
    assert cli.wait(30) == 1, cli.log()
    assert "received again: killing the workers" in cli.log()
    assert all(gone(pid) for pid in pids)


def test_workers_stop_when_the_supervisor_is_killed(
    cli_processes: list[CLIProcess], tmp_path: Path, queue: str
) -> None:
    """SIGKILL of the supervisor leaves no orphans: each worker sees its link close and stops
    gracefully."""
    cli = start(cli_processes, tmp_path, queue, APP, "--workers", "2")
    pids = cli.ready_pids(2)
    cli.proc.kill()
    cli.proc.wait(10)
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.1)
    assert "the supervisor went away: graceful shutdown" in cli.log()
