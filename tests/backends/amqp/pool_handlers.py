"""Handlers for the pool tests, at the top level of an importable module: worker processes
of a process pool import them by module and name (docs/pools.md)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

from trioworker import Message, pools

#: Where ``touch`` (a timer on a process pool: no arguments) writes; set by the test.
TOUCH_DIR_ENV = "TRIOWORKER_TEST_POOL_DIR"


def decide(messages: list[Message]) -> None:
    """Each body says what to do: ``ack``, ``reject`` (dead-letter) or ``retry`` (once);
    every handling is reported to the body's ``out`` queue through the outbox."""
    for m in messages:
        body = m.json()
        report = {"n": body["n"], "pid": os.getpid(), "attempt": m.attempt}
        pools.publish(report, routing_key=body["out"])
        if body["do"] == "reject":
            m.reject(requeue=False)
        elif body["do"] == "retry" and m.attempt == 1:
            m.retry()


def crash_once(messages: list[Message]) -> None:
    """The worker dies (``os._exit``) on a ``crash`` body delivered for the first time."""
    for m in messages:
        body = m.json()
        if body.get("crash") and not m.redelivered:
            os._exit(3)
        report = {"n": body["n"], "redelivered": m.redelivered, "pid": os.getpid()}
        pools.publish(report, routing_key=body["out"])


def publish_then_accept(messages: list[Message]) -> None:
    """Accepts each message after publishing (mandatory) to ``bad`` on its first delivery,
    which no queue takes, and to ``good`` on its redelivery."""
    for m in messages:
        body = m.json()
        key = body["good"] if m.redelivered else body["bad"]
        pools.publish({"redelivered": m.redelivered}, routing_key=key, mandatory=True)
        m.accept()


def add(message: Message) -> dict[str, Any]:
    """An RPC handler: the request travels in, the reply travels back."""
    numbers = message.json()
    return {"sum": sum(numbers), "pid": os.getpid()}


@dataclasses.dataclass
class Order:
    qty: int
    out: str


def total(orders: list[Order], messages: list[Message]) -> None:
    """A typed handler: the app decodes and validates the bodies, the models and the
    messages travel."""
    report = {
        "total": sum(o.qty for o in orders),
        "models": sorted({type(o).__name__ for o in orders}),
        "tags": [m.delivery_tag for m in messages],
    }
    pools.publish(report, routing_key=orders[0].out)


def touch() -> None:
    """A timer on a process pool: called without arguments."""
    directory = pathlib.Path(os.environ[TOUCH_DIR_ENV])
    (directory / str(os.getpid())).write_text("tick")


def fail(kind: str) -> None:
    """Raise what the test asks for (an exception that pickles, or one that does not)."""
    if kind == "plain":
        raise ValueError("bad value 42")
    if kind == "unpicklable":
        raise Unpicklable("a", "b")
    if kind == "exit":
        raise SystemExit(7)


class Unpicklable(Exception):
    """Its ``__init__`` takes two arguments, but pickle rebuilds it with one (its message)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}+{b}")


def report_pid_then_sleep(path: str, seconds: float) -> None:
    """Write this worker's pid to ``path``, then block (a call the test cancels)."""
    pathlib.Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def pid() -> int:
    return os.getpid()
