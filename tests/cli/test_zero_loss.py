"""Zero loss with ``--workers 2``: 20,000 messages, a SIGTERM or a kill -9 mid-run.

Each worker appends the ids of every bulk it handled to its own file (see app_module.py);
across all runs every id must be handled — exactly once after graceful stops; after a
kill -9 the only ids handled twice may be the killed worker's last bulk (handled, its ack
not yet sent: at least once).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._helpers import (
    APP,
    CLIProcess,
    cli_env,
    duplicates,
    fill,
    handled_bulks,
    handled_ids,
    wait_handled,
    wait_no_consumers,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOTAL = 20_000


@pytest.fixture
def runs() -> Iterator[list[CLIProcess]]:
    processes: list[CLIProcess] = []
    yield processes
    for process in processes:
        process.kill()
        print(f"----- {process.log_path} -----\n{process.log()}")


@pytest.fixture
def queue(amqp_url: str, unique_name: Callable[..., str], cleanup_queues: Any) -> str:
    name = cleanup_queues.add(unique_name("q"))
    fill(amqp_url, name, TOTAL)
    return name


def start(runs: list[CLIProcess], tmp_path: Path, queue: str) -> CLIProcess:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    env = cli_env(CLI_TEST_QUEUE=queue, CLI_TEST_RESULTS=str(results), CLI_TEST_SLEEP="0.05")
    process = CLIProcess(tmp_path, APP, "--workers", "2", env=env)
    runs.append(process)
    return process


def test_sigterm_mid_run_then_a_second_run_handles_everything_once(
    runs: list[CLIProcess], tmp_path: Path, queue: str, amqp_url: str
) -> None:
    results = tmp_path / "results"
    first = start(runs, tmp_path, queue)
    first.ready_pids(2)
    wait_handled(results, 3_000, first)
    first.send(signal.SIGTERM)
    assert first.wait() == 0, first.log()
    after_first = handled_ids(results)
    assert len(after_first) < TOTAL, "the first run finished everything: SIGTERM came too late"
    assert not duplicates(after_first)
    assert wait_no_consumers(amqp_url, queue) == TOTAL - len(after_first)

    second = start(runs, tmp_path, queue)
    wait_handled(results, TOTAL, second)
    second.send(signal.SIGTERM)
    assert second.wait() == 0, second.log()

    ids = handled_ids(results)
    assert not duplicates(ids), f"handled twice: {sorted(duplicates(ids))[:20]}"
    assert sorted(ids) == list(range(TOTAL))
    assert wait_no_consumers(amqp_url, queue) == 0
    print(f"first run {len(after_first)}, second run {TOTAL - len(after_first)}")


def test_kill_9_of_a_worker_mid_run_loses_nothing(
    runs: list[CLIProcess], tmp_path: Path, queue: str, amqp_url: str
) -> None:
    results = tmp_path / "results"
    cli = start(runs, tmp_path, queue)
    _, victim = cli.ready_pids(2)
    wait_handled(results, 3_000, cli)
    os.kill(victim, signal.SIGKILL)
    cli.ready_pids(3)  # replaced
    wait_handled(results, TOTAL, cli, unique=True)
    cli.send(signal.SIGTERM)
    assert cli.wait() == 0, cli.log()

    ids = handled_ids(results)
    assert set(ids) == set(range(TOTAL)), f"{TOTAL - len(set(ids))} ids LOST"
    victim_bulks = handled_bulks(results)[victim]
    allowed = set(victim_bulks[-1]) if victim_bulks else set()
    twice = duplicates(ids)
    assert set(twice) <= allowed, f"handled twice outside the killed bulk: {sorted(twice)[:20]}"
    assert wait_no_consumers(amqp_url, queue) == 0
    assert re.search(rf"pid {victim}\) exited unexpectedly \(signal SIGKILL\)", cli.log())
    print(f"killed worker handled {sum(map(len, victim_bulks))}; handled twice: {len(twice)}")
