"""JSON log lines carry the context they are about: app, route, queue, connection, and for a
line about one message its delivery tag, message id and correlation id.

The lines come from real route runs against the broker, through the CLI's own pieces: the
``JSONFormatter`` and the ``LogContextFilter`` that ``configure_logging`` puts on its handler.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from tests.support.broker import MUST_HAPPEN, Broker
from trioworker import App, Message, RemoteError, open_app
from trioworker._log_context import bind, current, log_context
from trioworker.amqp import BasicProperties
from trioworker.cli import JSONFormatter, LogContextFilter, configure_logging

user_log = logging.getLogger("tests.log_context.user")


class JSONLines(logging.Handler):
    """What ``--log-format json`` writes, parsed back: one dict per record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JSONFormatter())
        self.addFilter(LogContextFilter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def find(self, text: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if text in line["message"]]


@pytest.fixture
def json_lines() -> Iterator[JSONLines]:
    handler = JSONLines()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("trioworker", user_log.name)}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@dataclasses.dataclass
class Order:
    qty: int


async def eventually(condition: Callable[[], bool]) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while not condition():  # noqa: ASYNC110 - polling
            await trio.sleep(0.02)


@pytest.mark.broker
async def test_route_lines_carry_app_route_queue_connection_and_message_ids(
    broker: Broker, make_app: Callable[..., App], json_lines: JSONLines
) -> None:
    queue = await broker.queue("orders")
    sync_queue = await broker.queue("sync")
    app = make_app()
    handled: list[int] = []

    @app.amqp.consume([queue], name="orders-route")
    async def take(orders: list[Order]) -> None:
        user_log.info("took %d", orders[0].qty)
        user_log.info("mine", extra={"route": "overridden by extra="})
        handled.append(orders[0].qty)

    @app.amqp.consume([sync_queue], name="sync-route")
    def take_sync(messages: list[Message]) -> None:  # in a worker thread
        user_log.info("took in a thread")
        handled.append(0)

    async with open_app(app):
        bad = BasicProperties(message_id="m-1", correlation_id="c-1")
        await broker.publish(queue, b"not json", properties=bad)
        await broker.publish(queue, b'{"qty": 7}')
        await broker.publish(sync_queue, b"{}")
        await eventually(lambda: len(handled) == 2)

    context = {"app": app.name, "connection": "default"}
    (took,) = json_lines.find("took 7")
    assert took | context | {"route": "orders-route", "queue": queue} == took
    assert json_lines.find("mine")[0]["route"] == "overridden by extra="
    (threaded,) = json_lines.find("took in a thread")
    assert threaded | context | {"route": "sync-route", "queue": sync_queue} == threaded
    (rejected,) = json_lines.find("rejected (not requeued)")
    assert rejected["level"] == "WARNING"
    expected = {"route": "orders-route", "queue": queue, "message_id": "m-1"}
    assert rejected | context | expected | {"correlation_id": "c-1"} == rejected
    assert isinstance(rejected["delivery_tag"], int)
    (consuming,) = json_lines.find(f"consuming queue {queue!r}")
    assert consuming | context | {"route": "orders-route", "queue": queue} == consuming
    (opened,) = json_lines.find("AMQP connection 'default' open")
    assert opened | context == opened


@pytest.mark.broker
async def test_an_rpc_error_line_names_the_request(
    broker: Broker, make_app: Callable[..., App], json_lines: JSONLines
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue, name="failing-rpc")
    async def failing(message: Message) -> None:
        raise ValueError("no")

    async with open_app(app):
        with pytest.raises(RemoteError):
            await app.amqp.call(queue, {"x": 1}, timeout=MUST_HAPPEN)
    (raised,) = json_lines.find(f"RPC handler for {queue!r} raised")
    assert raised["app"] == app.name and raised["route"] == "failing-rpc"
    assert raised["queue"] == queue and raised["connection"] == "default"
    assert raised["correlation_id"] and isinstance(raised["delivery_tag"], int)
    assert "ValueError: no" in raised["exc_info"]


async def test_fields_follow_tasks_and_threads_and_end_with_their_block() -> None:
    seen: dict[str, Any] = {}

    async def child() -> None:
        seen["child"] = dict(current())
        bind(queue=None)  # None unbinds, in this task only
        seen["unbound"] = dict(current())

    def in_thread() -> None:
        seen["thread"] = dict(current())

    with log_context(route="r", queue="q"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        await trio.to_thread.run_sync(in_thread)
        seen["after child"] = dict(current())
    assert seen["child"] == seen["thread"] == seen["after child"] == {"route": "r", "queue": "q"}
    assert seen["unbound"] == {"route": "r"}
    assert dict(current()) == {}


def test_the_filter_adds_nothing_without_a_context_and_drops_nothing() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert LogContextFilter().filter(record) is True
    assert json.loads(JSONFormatter().format(record)).keys() == {
        "time",
        "level",
        "logger",
        "message",
        "pid",
    }


def test_configure_logging_installs_the_filter() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("info", "text", stream=stream)
        with log_context(app="orders", route="take"):
            logging.getLogger("trioworker.test").info("hello")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    assert stream.getvalue().rstrip().endswith("hello app=orders route=take")
