"""The context a log line is about — app, route, queue, connection — without passing it to
every log call.

The fields live in one :class:`~contextvars.ContextVar`. That fits trio exactly: every task
starts in a *copy* of the context of the task that spawned it, and ``trio.to_thread``
runs its function in a copy too. So fields bound where a task begins (the app's backends,
a connection's supervisor, a route's run, a timer's loop) reach every line logged in that
task and in the tasks it starts — the handlers' own lines included, sync handlers in their
threads too — and end with the task; nothing is threaded through arguments.

Nothing is installed on import. The fields reach a record only through
:class:`LogContextFilter`, which ``trioworker.cli.configure_logging`` adds to its handler;
without the CLI, add it to yours (docs/logging.md). A field given with ``extra=`` wins over
the context's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

__all__ = ["LogContextFilter", "bind", "current", "log_context"]

_EMPTY: Mapping[str, object] = MappingProxyType({})
_fields: ContextVar[Mapping[str, object]] = ContextVar("trioworker_log_context", default=_EMPTY)


def current() -> Mapping[str, object]:
    """The fields bound in the running task (read-only)."""
    return _fields.get()


def _merged(fields: Mapping[str, object]) -> Mapping[str, object]:
    merged = dict(_fields.get())
    for key, value in fields.items():
        if value is None:
            merged.pop(key, None)  # None unbinds: a multi-queue route has no one queue
        else:
            merged[key] = value
    return MappingProxyType(merged)


def bind(**fields: object) -> None:
    """Add ``fields`` to the context of the running task, for good.

    For the first lines of a task's root function: the task runs in its own copy of the
    context, so the fields end with it and reach only the tasks it spawns. Elsewhere use
    :func:`log_context`, which puts the previous fields back. A ``None`` value unbinds.
    """
    _fields.set(_merged(fields))


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` for the duration of the block (and to the tasks started in it).

    ``with log_context(route="orders"): nursery.start_soon(run)`` gives the new task the
    fields even when the caller is some other task: trio copies the context at spawn.
    """
    token = _fields.set(_merged(fields))
    try:
        yield
    finally:
        _fields.reset(token)


class LogContextFilter(logging.Filter):
    """Puts the fields bound with :func:`bind` / :func:`log_context` on every record.

    Add it to a *handler* (``handler.addFilter(LogContextFilter())``): a handler's filters
    see the records of every logger below it, in the thread that logs, where the context
    is the right one (a logger's filters see only that logger's own records). Fields set
    with ``extra=`` are kept as they are. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        if fields:
            attributes = record.__dict__
            for key, value in fields.items():
                attributes.setdefault(key, value)
        return True
