"""The examples the README points to run against the real broker and report success."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.broker
def test_worker_example_settles_every_order() -> None:
    result = run_example("worker.py", "--count", "1000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout.splitlines()
    assert "handled 1000 orders" in result.stdout
    assert "queue left with 0 messages, dead-letter queue with 12" in result.stdout


@pytest.mark.broker
def test_roundtrip_example_round_trips_every_message() -> None:
    result = run_example("roundtrip.py", "--count", "500")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 500/500 distinct messages round-tripped, 0 left in the queue" in result.stdout


@pytest.mark.broker
def test_worker_example_reports_a_wrong_password_clearly() -> None:
    result = run_example("worker.py", "--url", "amqp://guest:wrong@127.0.0.1:5672/%2F")
    assert result.returncode != 0
    assert "refused the credentials" in result.stderr


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
