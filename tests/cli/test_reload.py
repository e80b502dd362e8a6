"""``--reload``: a changed module restarts the worker; a broken change waits for the next."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import watchfiles  # noqa: F401  - a test dependency: its absence must fail, not skip

from ._helpers import CLIProcess, cli_env

APP_SOURCE = """
from trioworker import App
app = App(name="tw-test-cli-reload")  # no routes: no broker needed
VERSION = {version}
"""


def wait_for(cli: CLIProcess, text: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while cli.log().count(text) < count:
        assert cli.proc.poll() is None, cli.log()
        assert time.monotonic() < deadline, f"no {count} x {text!r}:\n{cli.log()}"
        time.sleep(0.1)


def test_a_change_restarts_the_worker_and_a_broken_one_waits(tmp_path: Path) -> None:
    module = tmp_path / "reloaded.py"
    module.write_text(APP_SOURCE.format(version=1))
    cli = CLIProcess(tmp_path, "reloaded:app", "--reload", "--app-dir", str(tmp_path),
                     env=cli_env())  # fmt: skip
    try:
        wait_for(cli, "is ready", 1)
        module.write_text(APP_SOURCE.format(version=2))
        wait_for(cli, "stopped for a reload", 1)
        wait_for(cli, "is ready", 2)
        module.write_text("app = undefined\n")
        wait_for(cli, "waiting for a change", 1)
        module.write_text(APP_SOURCE.format(version=3))
        wait_for(cli, "is ready", 3)
        cli.send(signal.SIGTERM)
        assert cli.wait() == 0, cli.log()
        assert "NameError: name 'undefined' is not defined" in cli.log()
    finally:
        cli.kill()
