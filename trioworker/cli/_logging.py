"""Log formats of the CLI: ``text`` for people, ``json`` (one object per line) for machines.

The library only ever *emits* records (``logging.getLogger("trioworker...")``); it never
configures logging on import, so an application that embeds trioworker keeps full control.
The CLI configures the root logger once, in the process that runs the app (and in the
supervisor), through :func:`configure_logging`. The formatters are public so the same output
is one ``dictConfig`` away without the CLI (docs/logging.md).

Context travels the stdlib way: ``log.info("...", extra={"route": "orders"})`` puts
``route`` on the record, and both formatters show every such field — they do not need to
know the names in advance (app, route, queue, delivery_tag, message_id, correlation_id,
connection, worker, pid, ...). The library binds ``app``, ``route``, ``queue`` and
``connection`` where its tasks begin (``trioworker/_log_context.py``);
:class:`LogContextFilter`, on the handler :func:`configure_logging` installs, copies them
onto each record, so a handler's own lines carry them too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from .._log_context import LogContextFilter

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JSONFormatter",
    "LogContextFilter",
    "TextFormatter",
    "configure_logging",
]

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of ``record``, in the order they were set."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with an explicit offset: lines from several hosts sort and compare as they are.
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Fields: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` (with its ``%``
    arguments applied), ``pid``, then every ``extra=`` field of the record, and
    ``exc_info`` / ``stack_info`` as strings when present. A value JSON cannot encode is
    written as its ``str()``, so a log call never fails over an odd context value.
    Newlines inside the message or the traceback are escaped by JSON, so one record is
    always exactly one line — what log shippers split on.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in context_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger [pid]: message key=value ...`` — the ``extra=`` fields last.

    The pid is there because with ``--workers N`` several processes share one stderr.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = context_fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the line
        context = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{head} {context}{sep}{tail}"


def configure_logging(
    level: str = "info", log_format: str = "text", stream: TextIO | None = None
) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``log_format``.

    Replaces the root logger's handlers (``force``), so calling it twice is harmless, and
    routes :mod:`warnings` through logging so they come out in the same format (a bare
    ``UserWarning`` line would break a JSON log stream). The handler gets a
    :class:`LogContextFilter`: each line carries the app, route, queue and connection it is
    about.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(LogContextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
