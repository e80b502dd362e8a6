"""Run the CLI as a real process, read what its workers handled, fill queues with pika.

pika (a test dependency) fills and inspects queues so that these tests lean on nothing of
our own AMQP client but what the app under test uses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pika

import trioworker
from tests.conftest import configured_amqp_url

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The trioworker these tests import (a private checkout via PYTHONPATH too) is the one the
#: CLI processes must run.
PACKAGE_ROOT = Path(trioworker.__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("trioworker")
APP = "tests.cli.app_module:app"
#: Upper bound for things that must happen (generous: two cores shared with the broker).
MUST_HAPPEN = 60.0


def cli_env(**variables: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(PACKAGE_ROOT), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env.setdefault("TRIOWORKER_GRACE_PERIOD", "10")
    # The broker the suite uses (a private node where rabbitmqctl cannot reach 5672).
    env.setdefault("TRIOWORKER_AMQP_URL", configured_amqp_url())
    env.update(variables)
    return env


def command(*args: str, console_script: bool = False) -> list[str]:
    if console_script:
        return [str(CONSOLE_SCRIPT), *args]
    return [sys.executable, "-m", "trioworker", *args]


def run_cli(*args: str, env: dict[str, str], timeout: float = MUST_HAPPEN,
            console_script: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``trioworker ARGS`` to completion."""
    return subprocess.run(
        command(*args, console_script=console_script), env=env, cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


class CLIProcess:
    """``trioworker run ...`` in the background, its stderr in a file."""

    def __init__(self, directory: Path, *args: str, env: dict[str, str]) -> None:
        self.log_path = directory / f"cli-{len(list(directory.glob('cli-*.log')))}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command("run", *args), env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run is not the supervisor's
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """Every line of the output as JSON (fails on a line that is not)."""
        records = []
        for line in self.log().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}") from None
        return records

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = MUST_HAPPEN) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the CLI still runs after {timeout} s:\n{self.log()}") from None

    def ready_pids(self, minimum: int, timeout: float = MUST_HAPPEN) -> list[int]:
        """Pids of ready workers, in order, once at least ``minimum`` were ready."""
        pattern = re.compile(r"worker \d+ \(pid (\d+)\) is ready")
        deadline = time.monotonic() + timeout
        while True:
            pids = [int(m) for m in pattern.findall(self.log())]
            if len(pids) >= minimum:
                return pids
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fewer than {minimum} workers got ready:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """Teardown: the supervisor and any worker still around (their own sessions)."""
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def worker_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"started \(pid (\d+)\)", self.log())]


def handled_bulks(directory: Path) -> dict[int, list[list[int]]]:
    """``{pid: [bulk ids, ...]}`` from the app's ``handled-<pid>.txt`` files."""
    found: dict[int, list[list[int]]] = {}
    for path in directory.glob("handled-*.txt"):
        text = path.read_text()
        text = text[: text.rfind("\n") + 1]  # a partial last line: killed mid-write
        pid = int(path.stem.removeprefix("handled-"))
        found[pid] = [[int(x) for x in line.split()] for line in text.splitlines() if line]
    return found


def handled_ids(directory: Path) -> list[int]:
    return [i for bulks in handled_bulks(directory).values() for bulk in bulks for i in bulk]


def wait_handled(directory: Path, count: int, process: CLIProcess, unique: bool = False,
                 timeout: float = MUST_HAPPEN) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        ids = handled_ids(directory)
        if len(set(ids) if unique else ids) >= count:
            return
        if process.proc.poll() is not None:
            raise AssertionError(f"the CLI exited early:\n{process.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ids)} < {count} handled in {timeout} s")
        time.sleep(0.1)


def duplicates(ids: list[int]) -> dict[int, int]:
    return {i: n for i, n in Counter(ids).items() if n > 1}


# ---------------------------------------------------------------------------- the broker


def fill(url: str, queue: str, total: int) -> None:
    """Declare ``queue`` (durable) and put ``total`` messages in it, bodies ``b"0"`` ..."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        # Confirms on a blocking channel make each publish a round trip: publish without
        # them and wait for the broker's count instead.
        for i in range(total):
            channel.basic_publish("", queue, str(i).encode())
        deadline = time.monotonic() + MUST_HAPPEN
        while queue_state(url, queue)[0] < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"the queue never held {total} messages")
            connection.process_data_events(0.1)
    finally:
        connection.close()


def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        reply = connection.channel().queue_declare(queue, passive=True)
        return reply.method.message_count, reply.method.consumer_count
    finally:
        connection.close()


def wait_no_consumers(url: str, queue: str, timeout: float = MUST_HAPPEN) -> int:
    """Wait until nobody consumes ``queue`` (everything unacked is back); ready count."""
    deadline = time.monotonic() + timeout
    while True:
        ready, consumers = queue_state(url, queue)
        if consumers == 0:
            return ready
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} still has {consumers} consumers")
        time.sleep(0.2)
