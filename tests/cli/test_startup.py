"""A StartupError exits 1 with its message; under the supervisor it stops everything once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.helpers import with_credentials

from ._helpers import CLIProcess, cli_env, run_cli

pytestmark = pytest.mark.broker

FAILING = "tests.cli.app_module:failing_app"


def test_startup_error_exits_1_with_its_message() -> None:
    result = run_cli("run", FAILING, "--factory", env=cli_env())
    assert result.returncode == 1, result.stderr
    assert "the app could not start" in result.stderr
    assert "the test app refuses to start" in result.stderr


def test_startup_error_stops_the_supervisor_without_a_restart_loop() -> None:
    result = run_cli("run", FAILING, "--factory", "--workers", "2", env=cli_env())
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("started (pid") == 1, result.stderr
    assert "could not start (exit status 1): stopping, not restarting" in result.stderr
    assert "restarting it in" not in result.stderr


@pytest.mark.slow
def test_wrong_password_is_a_startup_error(
    amqp_url: str,
    unique_name: Callable[..., str],
    cleanup_queues,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    queue = cleanup_queues.add(unique_name("q"))
    env = cli_env(
        TRIOWORKER_AMQP_URL=with_credentials(amqp_url, "guest", "not-the-password"),
        CLI_TEST_QUEUE=queue,
    )
    cli = CLIProcess(tmp_path, "tests.cli.app_module:app", "--workers", "2", env=env)
    try:
        deadline = time.monotonic() + 20
        while cli.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cli.proc.poll() == 1, cli.log()
        assert cli.log().count("started (pid") == 1
        assert "not-the-password" not in cli.log()
    finally:
        cli.kill()
