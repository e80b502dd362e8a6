"""An app that stops itself chooses the exit status: ``app.shutdown(exit_code=N)``."""

from __future__ import annotations

import pytest
import trio

from trioworker import App

from ._helpers import cli_env, run_cli

JOB = "tests.cli.app_module:self_stopping_app"


@pytest.mark.parametrize("code", [0, 3])
def test_the_command_exits_with_the_status_the_app_asked_for(code: int) -> None:
    result = run_cli("run", JOB, "--factory", env=cli_env(CLI_TEST_EXIT_CODE=str(code)))
    assert result.returncode == code, result.stderr
    # A graceful stop all the same: the shutdown hooks ran, and the status survived the
    # plain shutdown() that followed.
    assert f"shutdown hook ran, exit code {code}" in result.stdout, result.stdout
    assert ("stopped with exit status 3" in result.stderr) == (code == 3), result.stderr


async def test_the_first_non_zero_status_wins_and_the_next_run_starts_at_zero() -> None:
    app = App(name="tw-test-exit-code")
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        app.shutdown(exit_code=4)
        app.shutdown(exit_code=5)
        app.shutdown()
    assert app.exit_code == 4
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        app.shutdown()
    assert app.exit_code == 0


def test_a_status_outside_0_255_or_not_an_int_is_refused() -> None:
    app = App(name="tw-test-exit-code")
    with pytest.raises(ValueError, match="between 0 and 255"):
        app.shutdown(exit_code=256)
    with pytest.raises(ValueError, match="between 0 and 255"):
        app.shutdown(exit_code=-1)
    with pytest.raises(TypeError, match="an int"):
        app.shutdown(exit_code=True)
    with pytest.raises(TypeError, match="an int"):
        app.shutdown(exit_code="1")  # type: ignore[arg-type]
    app.shutdown(exit_code=1)  # not running: nothing to stop, nothing recorded
    assert app.exit_code == 0
