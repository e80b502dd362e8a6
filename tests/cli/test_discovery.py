"""``trioworker run`` with a target that cannot be served: one line, exit 2, no traceback.

Real processes: what is tested is what a user sees on the terminal.
"""

from __future__ import annotations

import sys

import pytest

from ._helpers import REPO_ROOT, cli_env, command, run_cli

BAD_TARGETS = [
    ("no_colon", "is not MODULE:ATTR"),
    ("tests.cli.no_such_module:app", "no module named 'tests.cli.no_such_module'"),
    ("tests.cli.app_module:missing", "has no attribute 'missing'"),
    ("tests.cli.app_module:not_an_app", "is not a trioworker.App but int 42"),
    ("tests.cli.broken_module:app", "NameError: name 'undefined_name' is not defined"),
    ("tests.cli.app_module:make_app", "use --factory"),
]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("target", "expected"), BAD_TARGETS, ids=[t for t, _ in BAD_TARGETS])
def test_bad_target_is_one_line_and_exit_2(target: str, expected: str) -> None:
    result = run_cli("run", target, env=cli_env())
    assert result.returncode == 2, result.stderr
    assert expected in one_line(result.stderr)


def test_the_console_script_says_the_same() -> None:
    result = run_cli("run", "tests.cli.broken_module:app", env=cli_env(), console_script=True)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert "broken_module.py, line 5" in line


def test_factory_that_is_not_callable() -> None:
    result = run_cli("run", "tests.cli.app_module:not_an_app", "--factory", env=cli_env())
    assert result.returncode == 2
    assert "is not callable" in one_line(result.stderr)


def test_app_dir_is_where_the_module_is_found(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "elsewhere.py").write_text("app = 'not an app'\n")
    result = run_cli("run", "elsewhere:app", "--app-dir", str(tmp_path), env=cli_env())
    assert result.returncode == 2
    assert "'elsewhere:app' is not a trioworker.App but str" in one_line(result.stderr)


def test_import_error_under_the_supervisor_stops_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A child that cannot import the app exits 2 before it is ready: no restart loop, and
    the supervisor exits 2 too; the other workers are never started."""
    result = run_cli("run", "tests.cli.broken_module:app", "--workers", "3", env=cli_env())
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("started (pid") == 1, result.stderr
    assert "NameError" in result.stderr
    assert "could not start (exit status 2): stopping, not restarting" in result.stderr
    assert "Traceback" not in result.stderr


def test_reload_with_several_workers_is_refused() -> None:
    result = run_cli("run", "tests.cli.app_module:app", "--reload", "--workers", "2", env=cli_env())
    assert result.returncode == 2
    assert "--reload runs a single worker" in one_line(result.stderr)


def test_reload_without_watchfiles_says_how_to_get_it() -> None:
    import subprocess

    code = (
        "import sys; sys.modules['watchfiles'] = None; "  # what an absent package looks like
        "from trioworker.cli import main; "
        "sys.exit(main(['run', 'tests.cli.app_module:app', '--reload']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pip install 'trioworker[reload]'" in one_line(result.stderr)


def test_python_dash_m_and_help() -> None:
    result = run_cli("run", "--help", env=cli_env())
    assert result.returncode == 0
    assert "--workers" in result.stdout and "--log-format" in result.stdout
    assert command("x")[1:3] == ["-m", "trioworker"]
