"""The blocked-loop watchdog names the route whose ``async def`` handler blocks the loop.

Real apps, real blocking (``time.sleep`` in a handler), the real broker for the AMQP routes:
a warning while the block lasts and a line with its length once it is over, both naming
the route; the block counted in ``/metrics``; a sync handler sleeping as long (it runs in a
thread) never reported. The thresholds are small so the tests stay short; the assertions
on durations are lower bounds only.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Callable

import pytest
import trio

from tests.support.broker import MUST_HAPPEN, Broker
from trioworker import App, Message, open_app
from trioworker._watchdog import NO_ROUTE, BlockedLoopWatchdog, code_of

THRESHOLD = 0.5
BLOCK = 1.5


def watchdog_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioworker.watchdog"]


async def wait_for_block_end(app: App) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while app.watchdog.last is None or app.watchdog.last.ended is None:  # noqa: ASYNC110
            await trio.sleep(0.02)


async def wait_handled(handled: list[object], n: int) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while len(handled) < n:  # noqa: ASYNC110 - polling
            await trio.sleep(0.02)


@pytest.mark.broker
async def test_an_async_handler_blocking_the_loop_is_named_and_counted(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.watchdog")
    queue = await broker.queue("blocked")
    app = make_app(blocked_loop_threshold=THRESHOLD)
    handled: list[object] = []

    @app.amqp.consume([queue], name="slow-route")
    async def slow(messages: list[Message]) -> None:
        time.sleep(BLOCK)  # the mistake the watchdog is for  # noqa: ASYNC251
        handled.append(messages)

    @app.amqp.consume([await broker.queue("other")], name="innocent")
    async def innocent(messages: list[Message]) -> None:
        handled.append(messages)

    async with open_app(app):
        await broker.publish(queue, b"{}")
        await wait_handled(handled, 1)
        await wait_for_block_end(app)
        metrics = app.metrics.render()[0].decode()

    lines = watchdog_lines(caplog)
    during = [r for r in lines if r.getMessage().startswith("event loop blocked for")]
    after = [r for r in lines if r.getMessage().startswith("event loop was blocked for")]
    assert len(during) == 1, [r.getMessage() for r in lines]
    assert len(after) == 1, [r.getMessage() for r in lines]
    for record in during + after:
        assert "in route 'slow-route'" in record.getMessage()
        assert "test_watchdog.py:" in record.getMessage()  # the handler's line
        assert record.__dict__["route"] == "slow-route"
        assert record.levelno == logging.WARNING
    assert during[0].__dict__["blocked_seconds"] >= THRESHOLD
    assert after[0].__dict__["blocked_seconds"] >= BLOCK - THRESHOLD
    assert app.watchdog.blocks == {"slow-route": 1}
    assert 'trioworker_event_loop_blocked_total{route="slow-route"} 1.0' in metrics
    assert 'trioworker_event_loop_blocked_seconds_count{route="slow-route"} 1.0' in metrics


@pytest.mark.broker
async def test_a_sync_handler_sleeping_as_long_is_not_reported(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.watchdog")
    queue = await broker.queue("sync")
    app = make_app(blocked_loop_threshold=THRESHOLD)
    handled: list[object] = []

    @app.amqp.consume([queue])
    def sleeper(messages: list[Message]) -> None:  # in a worker thread: the loop runs on
        time.sleep(BLOCK)
        handled.append(messages)

    async with open_app(app):
        await broker.publish(queue, b"{}")
        await wait_handled(handled, 1)
        await trio.sleep(THRESHOLD)  # time for a (wrong) report to come out
    assert app.watchdog.blocks == {}
    assert app.watchdog.last is None
    assert watchdog_lines(caplog) == []


@dataclasses.dataclass
class Order:
    qty: int


@pytest.mark.broker
async def test_a_typed_route_is_named_through_its_decoding_wrapper(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    # Two typed routes share the wrapper's code object: only the user's function behind
    # it (``__wrapped__``) tells them apart, and gives the line in the handler.
    queue = await broker.queue("typed")
    app = make_app(blocked_loop_threshold=0.2)
    handled: list[object] = []

    @app.amqp.consume([queue])
    async def typed_orders(orders: list[Order]) -> None:
        time.sleep(0.6)  # noqa: ASYNC251
        handled.append(orders)

    @app.amqp.consume([await broker.queue("typed-other")])
    async def other_orders(orders: list[Order]) -> None:
        handled.append(orders)

    async with open_app(app):
        await broker.publish(queue, b'{"qty": 1}')
        await wait_handled(handled, 1)
        await wait_for_block_end(app)
    assert app.watchdog.blocks == {"typed_orders": 1}
    last = app.watchdog.last
    assert last is not None and "test_watchdog.py:" in last.where


@pytest.mark.broker
async def test_a_nameko_rpc_method_is_named_not_the_route_serving_them_all(
    broker: Broker, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.watchdog")
    service = f"tw-test-watchdog-{secrets.token_hex(4)}"
    app = make_app(name=service, blocked_loop_threshold=THRESHOLD)
    broker.queues.extend([f"rpc-{service}", app.nameko.reply_queue])

    @app.nameko.rpc
    async def quick() -> str:
        return "quick"

    @app.nameko.rpc
    async def resize() -> str:
        time.sleep(BLOCK)  # noqa: ASYNC251
        return "resized"

    async with open_app(app):
        assert await app.nameko.call(service, "resize", timeout=MUST_HAPPEN) == "resized"
        await wait_for_block_end(app)

    method = f"nameko rpc-{service}.resize"
    assert app.watchdog.blocks == {method: 1}
    assert [r.__dict__["route"] for r in watchdog_lines(caplog)] == [method, method]


async def test_a_block_outside_any_route_and_a_timer_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.watchdog")
    app = App(name="watchdog-timers", blocked_loop_threshold=0.2, grace_period=2)
    ran: list[object] = []

    @app.every(3600, run_at_startup=True, name="nightly")
    async def nightly(app: App) -> None:
        time.sleep(0.6)  # noqa: ASYNC251
        ran.append(app)

    async with open_app(app):
        await wait_handled(ran, 1)
        await wait_for_block_end(app)
        app.watchdog.last = None
        time.sleep(0.6)  # the test itself: no route's handler  # noqa: ASYNC251
        await wait_for_block_end(app)
    assert app.watchdog.blocks == {"nightly": 1, NO_ROUTE: 1}
    outside = [r for r in watchdog_lines(caplog) if "outside any route" in r.getMessage()]
    assert outside and all(r.__dict__["route"] == NO_ROUTE for r in outside)


async def test_threshold_zero_turns_the_watchdog_off() -> None:
    app = App(name="watchdog-off", blocked_loop_threshold=0, grace_period=2)
    assert app.watchdog.threshold is None
    async with open_app(app):
        time.sleep(0.3)  # noqa: ASYNC251
        await trio.sleep(0.1)
    assert app.watchdog.blocks == {}


def test_the_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOWORKER_BLOCKED_LOOP_THRESHOLD", "0.25")
    assert App(name="env").watchdog.threshold == 0.25
    assert App(name="env", blocked_loop_threshold=2).watchdog.threshold == 2.0  # argument wins
    monkeypatch.setenv("TRIOWORKER_BLOCKED_LOOP_THRESHOLD", "0")
    assert App(name="env").watchdog.threshold is None
    monkeypatch.setenv("TRIOWORKER_BLOCKED_LOOP_THRESHOLD", "soon")
    with pytest.raises(ValueError, match="TRIOWORKER_BLOCKED_LOOP_THRESHOLD"):
        App(name="env")
    monkeypatch.delenv("TRIOWORKER_BLOCKED_LOOP_THRESHOLD")
    assert App(name="env").watchdog.threshold == 1.0
    with pytest.raises(ValueError, match="blocked_loop_threshold"):
        App(name="env", blocked_loop_threshold=-1)
    with pytest.raises(TypeError, match="blocked_loop_threshold"):
        App(name="env", blocked_loop_threshold="1")  # type: ignore[arg-type]


class _Handler:
    async def __call__(self, messages: list[object]) -> None: ...

    async def method(self, messages: list[object]) -> None: ...


async def _plain(messages: list[object]) -> None: ...


def test_code_of_finds_the_users_function_behind_wrappers() -> None:
    async def wrapper(messages: list[object]) -> None: ...

    functools.update_wrapper(wrapper, _plain, assigned=(), updated=())
    assert code_of(wrapper) is _plain.__code__
    assert code_of(functools.partial(_plain)) is _plain.__code__
    assert code_of(_Handler()) is _Handler.__call__.__code__
    assert code_of(_Handler().method) is _Handler.method.__code__
    assert code_of(len) is None


def test_metric_families_exist_before_any_block() -> None:
    watchdog = BlockedLoopWatchdog(App(name="families"), 1.0)
    names = [family.name for family in watchdog.collect()]
    assert names == ["trioworker_event_loop_blocked", "trioworker_event_loop_blocked_seconds"]
