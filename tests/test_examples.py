"""The examples the README points to run against the real broker and report success."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import with_credentials

ROOT = Path(__file__).resolve().parent.parent
#: The console script of the interpreter running the tests (the venv's, as in the script).
TRIOWORKER = Path(sys.executable).with_name("trioworker")


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def example_command() -> list[str]:
    """The ``trioworker ...`` arguments ``scripts/run-example.sh`` ends with (the README's
    one line): the tests run exactly that, without the bootstrap."""
    script = (ROOT / "scripts" / "run-example.sh").read_text()
    found = re.search(r'^exec "[^"\n]*/bin/trioworker" (.+?) "\$@"$', script, re.MULTILINE)
    assert found, "scripts/run-example.sh no longer ends by exec-ing trioworker"
    return shlex.split(found.group(1))


def run_worker_example(amqp_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRIOWORKER), *example_command()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "TRIOWORKER_AMQP_URL": amqp_url, **env},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.broker
def test_worker_example_settles_every_order_under_the_cli(amqp_url: str) -> None:
    assert example_command()[:2] == ["run", "worker:app"]  # served by `trioworker run`
    result = run_worker_example(amqp_url, EXAMPLE_ORDERS="1000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout.splitlines()
    assert "published 1000 orders" in result.stdout
    assert "handled 1000 orders" in result.stdout
    # 10 negative quantities rejected by the handler, 2 bodies that are not JSON.
    assert "988 acked, 10 rejected by the handler, 2 not JSON" in result.stdout
    assert "queue left with 0 messages, dead-letter queue with 12" in result.stdout
    assert "app 'trioworker-example' started" in result.stderr  # the CLI's logging


def test_worker_example_runs_on_the_in_memory_broker() -> None:
    """``TRIOWORKER_AMQP_URL=memory://``: the same job with no RabbitMQ at all (issue 14)."""
    result = run_worker_example("memory://", EXAMPLE_ORDERS="1000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout.splitlines()
    assert "988 acked, 10 rejected by the handler, 2 not JSON" in result.stdout
    assert "queue left with 0 messages, dead-letter queue with 12" in result.stdout
    assert "in-memory broker" in result.stderr  # it says it is not durable


@pytest.mark.broker
def test_worker_example_reports_a_wrong_password_clearly(amqp_url: str) -> None:
    wrong = with_credentials(amqp_url, "guest", "not-the-password")
    result = run_worker_example(wrong, EXAMPLE_ORDERS="10")
    assert result.returncode == 1, result.stdout + result.stderr  # a StartupError
    assert "the app could not start" in result.stderr
    assert "refused the credentials" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr


@pytest.mark.broker
def test_roundtrip_example_round_trips_every_message() -> None:
    result = run_example("roundtrip.py", "--count", "500")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 500/500 distinct messages round-tripped, 0 left in the queue" in result.stdout


def test_readme_example_builds_its_app() -> None:
    """The README's example registers a route of every kind on a real App (run, except
    for the final ``trio.run``; examples/service.py is the runnable version)."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "trio.run(app.serve)" in code
    namespace: dict[str, object] = {}
    exec(compile(code.replace("trio.run(app.serve)", ""), "README.md", "exec"), namespace)
    app = namespace["app"]
    from trioworker import App

    assert isinstance(app, App)
    assert [r.name for r in app.amqp.routes] == ["handle", "add"]
    assert app.http.active and app.sse.active and app.timers.active
