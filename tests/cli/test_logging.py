"""The log formats: JSON lines with the record's context, and text with it appended."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from trioworker.cli import JSONFormatter, TextFormatter, configure_logging

from ._helpers import cli_env, run_cli


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("trioworker.amqp", logging.WARNING, __file__, 1, "got %d", (3,), None)
    rec.__dict__.update(extra)
    return rec


def test_json_has_the_fields_and_the_context() -> None:
    context = {"app": "orders", "route": "handle", "queue": "q", "delivery_tag": 7,
               "message_id": "m-1", "correlation_id": "c-1", "connection": "default"}  # fmt: skip
    entry = json.loads(JSONFormatter().format(record(**context)))
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "trioworker.amqp"
    assert entry["message"] == "got 3"
    assert entry["time"].endswith("+00:00")
    for key, value in context.items():
        assert entry[key] == value


def test_json_renders_exceptions_as_one_string_field_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JSONFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exc_info"].startswith("Traceback")
    assert "ValueError: bad" in entry["exc_info"]


def test_json_survives_values_it_cannot_encode() -> None:
    entry = json.loads(JSONFormatter().format(record(thing=object(), raw=b"\xff")))
    assert entry["thing"].startswith("<object")
    assert entry["raw"] == "b'\\xff'"


def test_text_appends_the_context() -> None:
    line = TextFormatter().format(record(route="handle", queue="q"))
    assert " WARNING trioworker.amqp [" in line
    assert line.endswith("got 3 route=handle queue=q")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_configure_logging_json_and_warnings(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    logging.getLogger("trioworker.test").debug("hello", extra={"route": "r"})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries[0]["message"] == "hello" and entries[0]["route"] == "r"
    assert entries[1]["logger"] == "py.warnings" and "careful" in entries[1]["message"]


def test_configure_logging_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "text")


def test_importing_the_library_configures_nothing() -> None:
    code = "import logging, trioworker, trioworker.cli; print(logging.getLogger().handlers)"
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_errors_of_the_cli_are_json_too() -> None:
    result = run_cli("run", "tests.cli.app_module:missing", "--log-format", "json", env=cli_env())
    assert result.returncode == 2
    (entry,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert entry["level"] == "ERROR" and "has no attribute 'missing'" in entry["message"]
