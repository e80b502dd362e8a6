"""Routes on named pools against the real RabbitMQ, with real worker processes
(docs/pools.md): per-message decisions coming back from a process, a crashed worker, the
outbox published before the acks, RPC and timers on a process pool, a shared pool bounding
two routes, separate pools not starving each other, ``publish_sync`` from threads, and the
registration errors.

The process-pool handlers live in ``pool_handlers.py``: a worker imports them by name.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.backends.amqp import pool_handlers
from tests.support.broker import MUST_HAPPEN, Broker, eventually
from trioworker import App, Message, Retry, open_app
from trioworker.amqp import BasicProperties

pytestmark = pytest.mark.broker


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def reports(broker: Broker, queue: str, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` messages in ``queue`` and return their JSON bodies."""
    await broker.wait_ready(queue, count)
    return [json.loads(d.body) for d in await broker.drain(queue)]


# ------------------------------------------------------------------ process pools


async def test_decisions_and_the_outbox_come_back_from_the_worker_process(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    out = await broker.queue("out")
    for suffix in (".retry.200", ".dlq"):
        broker.queues.append(queue + suffix)
    plan = ["ack", "ack", "reject", "reject", "retry", "retry"]
    await broker.publish(queue, *(body(n=n, do=do, out=out) for n, do in enumerate(plan)))
    app = make_app()
    app.pool("cpu", kind="process", size=2)
    app.amqp.consume(
        queue, bulk_size=6, flush_interval=0.2, pool="cpu", retry=Retry(delays=(0.2,))
    )(pool_handlers.decide)

    async with open_app(app):
        got = await reports(broker, out, 8)  # 6 first handlings, 2 retried ones
        await broker.wait_ready(queue + ".dlq", 2)
    assert sorted((r["n"], r["attempt"]) for r in got) == [
        (0, 1),
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
        (4, 2),
        (5, 1),
        (5, 2),
    ]
    dead_lettered = [json.loads(d.body)["n"] for d in await broker.drain(queue + ".dlq")]
    assert sorted(dead_lettered) == [2, 3]
    assert await broker.ready(queue) == 0  # everything else acked: nothing came back
    pids = {r["pid"] for r in got}
    assert os.getpid() not in pids
    assert all(dead(pid) for pid in pids)  # the workers stopped with the app


async def test_a_crashing_worker_fails_only_its_bulk_and_the_pool_goes_on(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    out = await broker.queue("out")
    await broker.publish(
        queue,
        body(n=0, out=out),
        body(n=1, out=out, crash=True),
        body(n=2, out=out),
        body(n=3, out=out),
    )
    app = make_app()
    cpu = app.pool("cpu", kind="process", size=1)
    app.amqp.consume(queue, pool="cpu")(pool_handlers.crash_once)  # bulks of 1

    async with open_app(app):
        got = await reports(broker, out, 4)
    assert cpu.crashes == 1
    by_n = {r["n"]: r for r in got}
    assert sorted(by_n) == [0, 1, 2, 3]
    # Only the crashed bulk came back; the others were handled once.
    assert [n for n, r in sorted(by_n.items()) if r["redelivered"]] == [1]
    assert by_n[0]["pid"] != by_n[2]["pid"]  # a new worker replaced the dead one
    assert await broker.ready(queue) == 0


async def test_the_outbox_is_published_before_the_bulk_is_acknowledged(
    make_app: Callable[..., App], broker: Broker
) -> None:
    # The handler accepts its message after publishing (mandatory) to a routing key no
    # queue takes: the publish fails, so the accept must not be applied — the message is
    # requeued and handled again, and then publishes to a real queue.
    queue = await broker.queue()
    out = await broker.queue("out")
    nowhere = broker.name("nowhere")  # never declared
    await broker.publish(queue, body(bad=nowhere, good=out))
    app = make_app()
    app.pool("cpu", kind="process", size=1)
    app.amqp.consume(queue, pool="cpu")(pool_handlers.publish_then_accept)

    async with open_app(app):
        got = await reports(broker, out, 1)
        await trio.sleep(0.3)
    assert got == [{"redelivered": True}]
    assert await broker.ready(out) == 0
    assert await broker.ready(queue) == 0  # acked once its outbox was confirmed


async def test_rpc_typed_routes_and_timers_on_a_process_pool(
    make_app: Callable[..., App],
    broker: Broker,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(pool_handlers.TOUCH_DIR_ENV, str(tmp_path))  # workers inherit it
    rpc_queue = broker.name("rpc")
    orders, out = await broker.queue("orders"), await broker.queue("out")
    await broker.publish(orders, body(qty=2, out=out), body(qty=3, out=out), b"not json")
    app = make_app()
    app.pool("cpu", kind="process", size=1)
    app.amqp.rpc(rpc_queue, pool="cpu")(pool_handlers.add)
    app.amqp.consume(orders, bulk_size=3, flush_interval=0.2, pool="cpu")(pool_handlers.total)
    app.every(0.2, pool="cpu", run_at_startup=True)(pool_handlers.touch)

    async with open_app(app):
        reply = await app.amqp.call(rpc_queue, [1, 2, 3], timeout=MUST_HAPPEN)
        (typed,) = await reports(broker, out, 1)
        await eventually(lambda: trio.to_thread.run_sync(lambda: list(tmp_path.iterdir())), bool)
    assert reply["sum"] == 6
    assert reply["pid"] != os.getpid()
    touched = await trio.to_thread.run_sync(lambda: [int(p.name) for p in tmp_path.iterdir()])
    assert touched == [reply["pid"]]  # the same worker
    # The body that does not decode was rejected in the app; the two models travelled.
    assert typed == {"total": 5, "models": ["Order"], "tags": [1, 2]}
    assert await broker.ready(orders) == 0


# ------------------------------------------------------------------- thread pools


class Concurrency:
    """How many calls run at once (from the handlers' threads), and the peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


async def test_a_shared_pool_bounds_the_calls_of_every_route_using_it(
    make_app: Callable[..., App], broker: Broker
) -> None:
    first, second = await broker.queue(), await broker.queue()
    for queue in (first, second):
        await broker.publish(queue, *(b"x" for _ in range(4)))
    app = make_app()
    app.pool("one", kind="thread", size=1)
    running = Concurrency()

    def handle(messages: list[Message]) -> None:
        with running:
            time.sleep(0.05)

    # Each route alone would run 4 calls at once.
    app.amqp.consume(first, concurrency=4, pool="one", name="first")(handle)
    app.amqp.consume(second, concurrency=4, pool="one", name="second")(handle)
    async with open_app(app):
        await eventually(lambda: _calls(running), lambda n: n == 8)
    assert running.peak == 1


async def _calls(running: Concurrency) -> int:
    return running.calls


async def test_a_slow_route_does_not_starve_a_route_of_another_pool(
    make_app: Callable[..., App], broker: Broker
) -> None:
    slow_queue, fast_queue = await broker.queue(), await broker.queue()
    await broker.publish(slow_queue, *(b"s" for _ in range(3)))
    app = make_app(grace_period=1.0)
    app.pool("slow", kind="thread", size=1)
    app.pool("fast", kind="thread", size=1)
    release = threading.Event()
    fast_done: list[bytes] = []

    @app.amqp.consume(slow_queue, concurrency=3, pool="slow")
    def slow(messages: list[Message]) -> None:
        release.wait(MUST_HAPPEN)

    @app.amqp.consume(fast_queue, pool="fast")
    def fast(messages: list[Message]) -> None:
        fast_done.extend(m.body for m in messages)

    async with open_app(app):
        await eventually(lambda: _waiting(app), lambda n: n == 2)  # slow pool exhausted
        await broker.publish(fast_queue, b"f1", b"f2", b"f3")
        await eventually(lambda: _list(fast_done), lambda done: len(done) == 3)
        assert not release.is_set()  # handled while the slow pool was still blocked
        release.set()
    assert await broker.ready(slow_queue) == 0


async def _waiting(app: App) -> int:
    return app.pools.get("slow").waiting


async def _list(items: list[bytes]) -> list[bytes]:
    return list(items)


async def test_publish_sync_from_a_thread_handler(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    out = await broker.queue("out")
    await broker.publish(queue, b"hello", properties=BasicProperties(message_id="m1"))
    app = make_app()

    @app.amqp.consume(queue)
    def relay(messages: list[Message]) -> None:  # a plain def: runs in a thread
        for m in messages:
            app.amqp.publish_sync(m.body.upper(), routing_key=out, headers={"from": m.queue})

    with pytest.raises(RuntimeError, match="needs a running app"):
        app.amqp.publish_sync(b"x", routing_key=out)
    async with open_app(app):
        await broker.wait_ready(out, 1)
        with pytest.raises(RuntimeError, match=r"use await app\.amqp\.publish"):
            app.amqp.publish_sync(b"x", routing_key=out)  # from the event loop's thread
        # Any thread of the program, not only trio's own.
        foreign = threading.Thread(
            target=app.amqp.publish_sync, args=(b"again",), kwargs={"routing_key": out}
        )
        foreign.start()
        await trio.to_thread.run_sync(foreign.join)
        await broker.wait_ready(out, 2)
    first, second = await broker.drain(out)
    assert (first.body, second.body) == (b"HELLO", b"again")
    assert first.properties.headers == {"from": queue}


# --------------------------------------------------------------- registration


def test_routes_refuse_what_their_pool_cannot_run(make_app: Callable[..., App]) -> None:
    app = make_app()
    app.pool("cpu", kind="process", size=1)
    app.pool("io", kind="thread", size=1)

    async def coroutine(messages: list[Message]) -> None: ...

    def local(messages: list[Message]) -> None: ...

    with pytest.raises(ValueError, match="unknown pool 'gpu'"):
        app.amqp.consume("q", pool="gpu")(pool_handlers.decide)
    with pytest.raises(TypeError, match=r"route 'coroutine'.*a process cannot run a coroutine"):
        app.amqp.consume("q", pool="cpu")(coroutine)
    with pytest.raises(TypeError, match="already runs on the event loop"):
        app.amqp.consume("q", pool="io")(coroutine)
    with pytest.raises(TypeError, match="defined inside a function"):
        app.amqp.consume("q", pool="cpu")(local)
    with pytest.raises(TypeError, match="a lambda"):
        app.amqp.rpc("q", pool="cpu")(lambda message: None)
    with pytest.raises(TypeError, match="called without arguments"):
        app.every(1, pool="cpu")(pool_handlers.decide)
    with pytest.raises(TypeError, match="cannot travel to a worker process"):
        app.http.get("/x", pool="cpu")(local)
    with pytest.raises(ValueError, match="unknown pool"):
        app.sse.consume("http://127.0.0.1:1/events", pool="gpu")(local)
    assert app.amqp.routes == []  # nothing half-registered
    app.amqp.consume("q", pool="cpu")(pool_handlers.decide)
    app.amqp.consume("q2", pool="io")(local)  # threads run closures fine
    assert len(app.amqp.routes) == 2
