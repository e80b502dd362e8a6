"""The framework on the memory broker: bulks with per-message decisions, retries whose
delays are skipped with ``fast_forward``, the dead-letter queue, RPC, ``memory://``."""

from __future__ import annotations

import logging

import pytest
import trio

from trioworker import App, Message, Queue, Retry, StartupError, open_app
from trioworker.amqp import NoRouteError, RemoteError, rpc_client
from trioworker.testing import MemoryBroker

from .util import until


def _app(broker: MemoryBroker, **options: object) -> App:
    return App(amqp_url=broker.url, name="memory-tests", grace_period=2.0, **options)  # type: ignore[arg-type]


async def test_a_bulk_route_with_per_message_decisions(mbroker: MemoryBroker) -> None:
    app = _app(mbroker)
    bulks: list[list[int]] = []
    orders = Queue("orders", dead_letter="orders.dlq")

    @app.amqp.consume([orders], bulk_size=5, flush_interval=0.05, declare=True)
    async def handle(messages: list[Message]) -> None:
        bulks.append([m.json()["n"] for m in messages])
        for m in messages:
            n = m.json()["n"]
            if n % 3 == 1:
                m.reject(requeue=False)  # to the DLQ
            elif n % 3 == 2 and not m.redelivered:
                m.reject(requeue=True)  # once more, then acked

    async with open_app(app):
        for n in range(10):
            await app.amqp.publish({"n": n}, routing_key="orders")
        view = mbroker.queue("orders")
        await until(lambda: view.acked == 7 and mbroker.is_idle())
    assert sorted(n for bulk in bulks for n in bulk) == sorted([*range(10), 2, 5, 8])
    assert all(len(bulk) <= 5 for bulk in bulks)
    assert (view.rejected, view.requeued, view.dead_lettered) == (3, 3, 3)
    assert [m.json() for m in mbroker.queue("orders.dlq").messages] == [
        {"n": 1},
        {"n": 4},
        {"n": 7},
    ]
    assert mbroker.queue("orders.dlq").messages[0].properties.delivery_mode == 2


async def test_retries_with_delays_skipped_then_the_dlq(mbroker: MemoryBroker) -> None:
    app = _app(mbroker)
    attempts: list[int] = []

    @app.amqp.consume(Queue("jobs"), declare=True, retry=Retry(attempts=3, delays=(60, 300)))
    async def handle(messages: list[Message]) -> None:
        attempts.extend(m.attempt for m in messages)
        raise RuntimeError("always")

    async with open_app(app):
        await app.amqp.publish(b"job", routing_key="jobs")
        await until(lambda: len(mbroker.queue("jobs.retry.60000").messages) == 1)
        started = trio.current_time()
        assert attempts == [1]
        mbroker.fast_forward(66)  # 60 s and its jitter
        await until(lambda: len(mbroker.queue("jobs.retry.300000").messages) == 1)
        mbroker.fast_forward(330)
        await until(lambda: len(mbroker.queue("jobs.dlq").messages) == 1)
        assert trio.current_time() - started < 10  # no real waiting
    assert attempts == [1, 2, 3]
    [dead] = mbroker.queue("jobs.dlq").messages
    assert dead.headers["x-trioworker-reason"] == "exhausted"
    assert dead.headers["x-trioworker-attempts"] == 3
    [death] = [d for d in dead.headers["x-death"] if d["queue"] == "jobs.retry.300000"]
    assert death["reason"] == "expired"


async def test_rpc_routes_and_calls(mbroker: MemoryBroker) -> None:
    app = _app(mbroker)

    @app.amqp.rpc("math.add")
    async def add(message: Message) -> dict:
        a, b = message.json()
        if a < 0:
            raise ValueError("negative")
        return {"sum": a + b}

    async with open_app(app):
        assert await app.amqp.call("math.add", [1, 2]) == {"sum": 3}
        async with rpc_client(mbroker.url) as client:
            results: list[dict] = []

            async def one(i: int) -> None:
                results.append(await client.call("math.add", [i, i]))

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
            assert sorted(results, key=lambda r: r["sum"]) == [{"sum": 2 * i} for i in range(20)]
            with pytest.raises(RemoteError, match="negative"):
                await client.call("math.add", [-1, 1])
            with pytest.raises(NoRouteError):
                await client.call("no.such.route", [], timeout=5)


async def test_an_app_on_memory_runs_its_own_broker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trioworker.amqp")
    app = App(amqp_url="memory://self-hosted/", name="demo", grace_period=2.0)
    got = []

    @app.amqp.consume(Queue("greetings"), declare=True)
    async def greet(messages: list[Message]) -> None:
        got.extend(m.body for m in messages)

    async with open_app(app):
        await app.amqp.publish(b"hello", routing_key="greetings")
        await until(lambda: got == [b"hello"])
    notes = [r.getMessage() for r in caplog.records if "in-memory broker" in r.getMessage()]
    assert len(notes) == 1 and "not durable" in notes[0]


async def test_redirect_points_every_connection_at_the_broker(mbroker: MemoryBroker) -> None:
    mbroker.add_vhost("audit")
    app = App(amqp_url="amqp://guest:guest@rabbit.invalid:5672/%2F", name="r", grace_period=2.0)
    seen: list[str] = []

    @app.amqp.consume(Queue("default-q"), declare=True)
    async def main(messages: list[Message]) -> None:
        seen.append("default")

    @app.amqp.consume(Queue("audit-q"), declare=True, vhost="audit")
    async def audit(messages: list[Message]) -> None:
        seen.append("audit")

    app.amqp.redirect(mbroker.url)
    async with open_app(app):
        with pytest.raises(RuntimeError, match="running app"):
            app.amqp.redirect(mbroker.url)
        await app.amqp.publish(b"1", routing_key="default-q")
        await app.amqp.publish(b"2", routing_key="audit-q", vhost="audit")
        await until(lambda: sorted(seen) == ["audit", "default"])
    assert mbroker.queues("audit") == ["audit-q"]


async def test_refused_credentials_are_a_startup_error(mbroker: MemoryBroker) -> None:
    app = App(amqp_url=mbroker.url.replace("memory://", "memory://guest:wrong@"), name="x")

    @app.amqp.consume("anything")
    async def handle(messages: list[Message]) -> None: ...

    with pytest.raises(StartupError, match="ACCESS_REFUSED"):
        async with open_app(app):
            pass
