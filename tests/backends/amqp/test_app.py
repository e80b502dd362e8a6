"""App and AMQP routes against the real RabbitMQ: hooks, bulks, decisions, publishing,
timeouts, missing queues, shutdown, and ack coalescing on the wire.

Each test declares its own queues (``broker`` fixture, deleted at teardown) and runs the app
with ``trioworker.open_app`` (or ``app.serve`` in a nursery). Outcomes are read back through a
separate connection: a message that is acknowledged is gone from its queue once the app has
closed its connection; one that is requeued (by the app, or by the broker when the channel
closes) is ready again.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

import trioworker.backends.amqp._supervisor as amqp_supervisor
from tests.support.broker import MUST_HAPPEN, Broker, eventually
from tests.support.proxy import open_tcp_proxy
from trioworker import (
    Actions,
    App,
    InvalidMessageBody,
    Message,
    Request,
    StartupError,
    Timeit,
    open_app,
)
from trioworker.amqp import (
    BasicProperties,
    Channel,
    MessageReturnedError,
    PreconditionFailedError,
)

pytestmark = pytest.mark.broker


class Seen:
    """What a handler got: bulks in call order, with a way to wait for a count."""

    def __init__(self) -> None:
        self.bulks: list[list[Message]] = []
        self.times: list[float] = []
        self._changed = trio.Event()

    def add(self, bulk: list[Message]) -> None:
        self.bulks.append(list(bulk))
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    @property
    def messages(self) -> list[Message]:
        return [m for bulk in self.bulks for m in bulk]

    @property
    def bodies(self) -> list[bytes]:
        return [m.body for m in self.messages]

    async def wait_for(self, count: int, within: float = MUST_HAPPEN) -> None:
        """Wait until at least ``count`` messages were handed to the handler."""
        with trio.fail_after(within):
            while len(self.messages) < count:
                await self._changed.wait()


@dataclass(frozen=True)
class Decision:
    method: str  # ack | nack | reject
    tag: int
    multiple: bool
    requeue: bool


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """Every basic_ack/nack/reject the app makes (a spy: the real frames still go out)."""
    calls: list[Decision] = []
    ack, nack, reject = Channel.basic_ack, Channel.basic_nack, Channel.basic_reject

    def spy_ack(self: Channel, delivery_tag: int, multiple: bool = False) -> None:
        calls.append(Decision("ack", delivery_tag, multiple, False))
        ack(self, delivery_tag, multiple)

    def spy_nack(
        self: Channel, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        calls.append(Decision("nack", delivery_tag, multiple, requeue))
        nack(self, delivery_tag, multiple, requeue)

    def spy_reject(self: Channel, delivery_tag: int, requeue: bool = True) -> None:
        calls.append(Decision("reject", delivery_tag, False, requeue))
        reject(self, delivery_tag, requeue)

    monkeypatch.setattr(Channel, "basic_ack", spy_ack)
    monkeypatch.setattr(Channel, "basic_nack", spy_nack)
    monkeypatch.setattr(Channel, "basic_reject", spy_reject)
    return calls


CONNECTION_OPEN = (10, 40)
BASIC_CANCEL = (60, 30)
BASIC_ACK = (60, 80)
BASIC_REJECT = (60, 90)
BASIC_NACK = (60, 120)


class Wire:
    """A TCP proxy in front of the broker recording what the app sends (client -> broker).

    Each connection through it (the app's consumer and publishing connections) is recorded
    apart: the proxy pumps each one's upstream in a task of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sent: dict[int, bytearray] = {}

    def record(self, chunk: bytes) -> bytes:
        self._sent.setdefault(id(trio.lowlevel.current_task()), bytearray()).extend(chunk)
        return chunk

    def frames(self) -> list[tuple[int, int, bytes]]:
        """(class_id, method_id, arguments) of every method frame sent so far: each
        connection's in order, one connection after the other."""
        return [frame for sent in self._sent.values() for frame in self._frames(bytes(sent))]

    @staticmethod
    def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
        pos = 8 if data.startswith(b"AMQP") else 0
        frames = []
        while pos + 7 <= len(data):
            frame_type, _channel, size = struct.unpack_from(">BHI", data, pos)
            payload = data[pos + 7 : pos + 7 + size]
            assert data[pos + 7 + size] == 0xCE, "frame end octet"
            if frame_type == 1:
                class_id, method_id = struct.unpack_from(">HH", payload)
                frames.append((class_id, method_id, payload[4:]))
            pos += 8 + size
        assert pos == len(data), "the stream ends on a frame boundary"
        return frames


@pytest.fixture
async def wire(broker_host_port: tuple[str, int]) -> AsyncIterator[Wire]:
    async with open_tcp_proxy(*broker_host_port) as proxy:
        recorder = Wire(proxy.amqp_url())
        proxy.transform_upstream = recorder.record
        yield recorder


# --------------------------------------------------------------------- the app itself


def test_app_is_a_mutable_mapping_for_shared_state(amqp_url: str) -> None:
    app = App(amqp_url)
    assert len(app) == 0
    app["db"] = "pool"
    app["cache"] = {}
    assert app["db"] == "pool"
    assert "cache" in app
    assert app.get("missing", 7) == 7
    assert sorted(app) == ["cache", "db"]
    assert len(app) == 2
    del app["db"]
    assert list(app) == ["cache"]
    with pytest.raises(KeyError):
        app["db"]
    app.update(a=1)
    assert dict(app) == {"cache": {}, "a": 1}


def test_route_defaults_follow_the_contract(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = App(amqp_url, prefetch=50)

    async def handle(messages: list[Message]) -> None: ...

    assert app.amqp.consume("q")(handle) is handle  # returned unchanged
    monkeypatch.setenv("TRIOWORKER_FLUSH_INTERVAL", "2.5")
    app.amqp.consume("q2")(handle)
    default, from_env = app.amqp.routes
    assert default.on_success is Actions.ACK
    assert default.on_exception is Actions.REQUEUE
    assert default.bulk_size == 1
    assert default.concurrency == 1
    assert default.flush_interval == 60
    assert default.prefetch == 50
    assert from_env.flush_interval == 2.5


async def test_startup_and_shutdown_hooks_run_in_order_with_the_app(
    make_app: Callable[..., App],
) -> None:
    events: list[Any] = []
    app = make_app()

    @app.on_startup
    async def first(a: App) -> None:
        events.append(("startup-1", a is app, a.running))
        a["client"] = "connected"

    @app.on_startup
    async def second(a: App) -> None:
        events.append(("startup-2", a["client"]))

    @app.on_shutdown
    async def third(a: App) -> None:
        events.append(("shutdown-1", a is app))

    @app.on_shutdown
    async def fourth(a: App) -> None:
        events.append(("shutdown-2", a["client"]))

    with trio.fail_after(MUST_HAPPEN):
        async with open_app(app) as running:
            assert running is app
            assert app.running
            events.append("body")
    assert not app.running
    assert events == [
        ("startup-1", True, True),
        ("startup-2", "connected"),
        "body",
        ("shutdown-1", True),
        ("shutdown-2", "connected"),
    ]


async def test_an_error_in_the_open_app_block_propagates_after_a_graceful_shutdown(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    shut_down: list[bool] = []

    @app.on_shutdown
    async def hook(a: App) -> None:
        shut_down.append(True)

    with trio.fail_after(MUST_HAPPEN), pytest.raises(KeyError, match="from the block"):
        async with open_app(app):
            raise KeyError("from the block")
    assert shut_down == [True]
    assert not app.running


@pytest.mark.parametrize("runner", ["open_app", "serve"])
async def test_failing_startup_hook_raises_startup_error_and_starts_nothing(
    runner: str,
    make_app: Callable[..., App],
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connects: list[str] = []
    real_connect = amqp_supervisor.connect

    def counting_connect(url: str, **kwargs: Any) -> Any:
        connects.append(url)
        return real_connect(url, **kwargs)

    monkeypatch.setattr(amqp_supervisor, "connect", counting_connect)
    queue = await broker.queue()
    await broker.publish(queue, b"untouched")
    events: list[str] = []
    app = make_app()
    cause = OSError("database is down")

    @app.on_startup
    async def broken(a: App) -> None:
        events.append("broken")
        raise cause

    @app.on_startup
    async def never(a: App) -> None:
        events.append("second startup hook")

    @app.on_shutdown
    async def shutdown(a: App) -> None:
        events.append("shutdown hook")

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        events.append("handler")

    with trio.fail_after(MUST_HAPPEN), pytest.raises(StartupError) as raised:
        if runner == "open_app":
            async with open_app(app):
                events.append("body")
        else:
            await app.serve()
    assert raised.value.__cause__ is cause
    assert events == ["broken"]
    assert connects == [], "no AMQP connection may be opened when startup fails"
    assert not app.running
    assert await broker.ready(queue) == 1


# ------------------------------------------------------------------------------ bulks


async def test_handler_receives_a_list_even_with_bulk_size_1(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"a", b"b", b"c")
    seen = Seen()
    app = make_app()
    received: list[Any] = []

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        received.append(messages)
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(3)
    assert all(type(bulk) is list and len(bulk) == 1 for bulk in received)
    assert all(isinstance(m, Message) for m in seen.messages)
    assert seen.bodies == [b"a", b"b", b"c"]
    assert [m.queue for m in seen.messages] == [queue] * 3
    assert [m.routing_key for m in seen.messages] == [queue] * 3


async def test_message_exposes_the_delivery(make_app: Callable[..., App], broker: Broker) -> None:
    queue = await broker.queue()
    properties = BasicProperties(
        content_type="application/json", headers={"tenant": "acme", "try": 2}, message_id="m-1"
    )
    await broker.publish(queue, b'{"id": 7}', properties=properties)
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(1)
    (m,) = seen.messages
    assert m.body == b'{"id": 7}'
    assert m.json() == {"id": 7}
    assert m.headers == {"tenant": "acme", "try": 2}
    assert m.properties.message_id == "m-1"
    assert m.properties.content_type == "application/json"
    assert m.redelivered is False
    assert m.routing_key == queue
    assert m.exchange == ""
    assert m.queue == queue
    assert m.delivery_tag == 1
    assert m.decision is None


async def test_bulk_size_10_with_25_messages_gives_10_10_5_the_last_after_flush_interval(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, *[str(i).encode() for i in range(25)])
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=10, flush_interval=0.5)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(25)
        await trio.sleep(0.3)
    assert [len(bulk) for bulk in seen.bulks] == [10, 10, 5]
    assert seen.bodies == [str(i).encode() for i in range(25)]
    # The two full bulks go out as soon as they are full; the remainder waits ~0.5 s.
    wait = seen.times[2] - seen.times[1]
    assert 0.4 <= wait < 3.0, wait
    assert seen.times[1] - seen.times[0] < 0.4


async def test_effective_bulk_size_is_capped_by_the_prefetch(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, *[b"x"] * 30)
    seen = Seen()
    app = make_app(prefetch=10)

    # A 100-message bulk could never fill with 10 unacknowledged deliveries: every bulk
    # would wait the whole flush interval (30 messages → 3 x 20 s).
    @app.amqp.consume(queue, bulk_size=100, flush_interval=20)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(30, within=10)
    assert [len(bulk) for bulk in seen.bulks] == [10, 10, 10]
    assert await broker.ready(queue) == 0


# -------------------------------------------------------------------------- decisions


async def test_success_acknowledges_the_messages(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1", b"2", b"3")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=3, flush_interval=1)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(3)
    assert await broker.ready(queue) == 0  # unacknowledged ones would be back by now


async def test_exception_requeues_by_default_and_the_message_comes_back_redelivered(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"flaky")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        if not messages[0].redelivered:
            raise RuntimeError("transient failure")

    async with open_app(app):
        await seen.wait_for(2)
    assert [(m.body, m.redelivered) for m in seen.messages] == [
        (b"flaky", False),
        (b"flaky", True),
    ]
    assert await broker.ready(queue) == 0


async def test_on_exception_reject_dead_letters_the_bulk(
    make_app: Callable[..., App], broker: Broker
) -> None:
    dlq = await broker.queue("dlq")
    queue = await broker.queue(dead_letter_to=dlq)
    await broker.publish(queue, b"poison-1", b"poison-2")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=2, flush_interval=1, on_exception=Actions.REJECT)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        raise ValueError("never going to work")

    async with open_app(app):
        await seen.wait_for(2)
        await broker.wait_ready(dlq, 2)
    assert sorted(d.body for d in await broker.drain(dlq)) == [b"poison-1", b"poison-2"]
    assert await broker.ready(queue) == 0
    assert len(seen.messages) == 2, "rejected without requeue: never delivered again"


async def _per_message_decisions(
    make_app: Callable[..., App], broker: Broker, *, raise_after: bool
) -> tuple[Seen, list[bytes], str]:
    dlq = await broker.queue("dlq")
    queue = await broker.queue(dead_letter_to=dlq)
    await broker.publish(queue, b"accept", b"dead", b"requeue", b"default")
    seen = Seen()
    app = make_app()
    # The default the per-message calls must beat: on success ACK; on exception REJECT
    # (so that m.reject(), which requeues, is distinguishable from it).
    on_exception = Actions.REJECT

    @app.amqp.consume(queue, bulk_size=4, flush_interval=0.5, on_exception=on_exception)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        for m in messages:
            if m.redelivered:
                continue  # the requeued one, back again: the default applies
            if m.body == b"accept":
                m.accept()
            elif m.body == b"dead":
                m.reject(requeue=False)
            elif m.body == b"requeue":
                m.reject()
        if raise_after and not any(m.redelivered for m in messages):
            raise RuntimeError("the bulk failed after deciding some messages")

    async with open_app(app):
        await seen.wait_for(5)  # "requeue" comes back once
        await trio.sleep(0.3)
    dead = sorted(d.body for d in await broker.drain(dlq))
    return seen, dead, queue


async def test_per_message_decisions_beat_the_success_default(
    make_app: Callable[..., App], broker: Broker
) -> None:
    seen, dead, queue = await _per_message_decisions(make_app, broker, raise_after=False)
    assert dead == [b"dead"]  # reject(requeue=False) beat ACK
    assert [m.body for m in seen.messages if m.redelivered] == [b"requeue"]  # reject() beat ACK
    assert sorted(seen.bodies) == [b"accept", b"dead", b"default", b"requeue", b"requeue"]
    assert await broker.ready(queue) == 0  # accept and default were acknowledged


async def test_per_message_decisions_beat_the_exception_default(
    make_app: Callable[..., App], broker: Broker
) -> None:
    seen, dead, queue = await _per_message_decisions(make_app, broker, raise_after=True)
    # accept() beat REJECT: not dead-lettered, not redelivered. reject() beat REJECT: back
    # once. The undecided message got the route's on_exception (REJECT).
    assert dead == [b"dead", b"default"]
    assert [m.body for m in seen.messages if m.redelivered] == [b"requeue"]
    assert sorted(seen.bodies) == [b"accept", b"dead", b"default", b"requeue", b"requeue"]
    assert await broker.ready(queue) == 0


async def test_a_body_that_is_not_json_is_dead_lettered_and_the_rest_of_its_bulk_acked(
    make_app: Callable[..., App], broker: Broker
) -> None:
    dlq = await broker.queue("dlq")
    queue = await broker.queue(dead_letter_to=dlq)
    await broker.publish(queue, b'{"n": 1}', b"{not json", b'{"n": 2}', b"\xff\xfe")
    seen = Seen()
    decoded: list[Any] = []
    invalid: list[bytes] = []
    app = make_app()

    @app.amqp.consume(queue, bulk_size=4, flush_interval=0.5)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            try:
                decoded.append(m.json())
            except InvalidMessageBody:
                invalid.append(m.body)
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(4)
        await broker.wait_ready(dlq, 2)
        # The worker keeps going with later messages.
        await broker.publish(queue, b'{"n": 3}')
        await seen.wait_for(5)
    assert [len(bulk) for bulk in seen.bulks] == [4, 1]
    assert decoded == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert invalid == [b"{not json", b"\xff\xfe"]
    assert sorted(d.body for d in await broker.drain(dlq)) == [b"{not json", b"\xff\xfe"]
    assert await broker.ready(queue) == 0


async def test_an_uncaught_invalid_body_is_dead_lettered_and_the_rest_gets_on_exception(
    make_app: Callable[..., App], broker: Broker
) -> None:
    dlq = await broker.queue("dlq")
    queue = await broker.queue(dead_letter_to=dlq)
    await broker.publish(queue, b'{"n": 1}', b"oops", b'{"n": 2}')
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=3, flush_interval=0.5)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        for m in messages:
            m.json()  # lets InvalidMessageBody propagate

    async with open_app(app):
        await seen.wait_for(5)  # the good two come back (REQUEUE), this time without it
        await broker.wait_ready(dlq, 1)
    assert [[m.body for m in bulk] for bulk in seen.bulks] == [
        [b'{"n": 1}', b"oops", b'{"n": 2}'],
        [b'{"n": 1}', b'{"n": 2}'],
    ]
    assert all(m.redelivered for m in seen.bulks[1])
    assert [d.body for d in await broker.drain(dlq)] == [b"oops"]
    assert await broker.ready(queue) == 0


# ------------------------------------------------------------------ handler execution


async def test_a_handler_past_its_timeout_gets_on_exception_and_the_route_goes_on(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"hangs")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, timeout=0.5)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        if messages[0].body == b"hangs" and not messages[0].redelivered:
            await trio.sleep_forever()

    async with open_app(app):
        await seen.wait_for(2)  # timed out, requeued (on_exception default), redelivered
        await broker.publish(queue, b"next")
        await seen.wait_for(3)
    assert [(m.body, m.redelivered) for m in seen.messages] == [
        (b"hangs", False),
        (b"hangs", True),
        (b"next", False),
    ]
    assert 0.4 <= seen.times[1] - seen.times[0] < 5
    assert await broker.ready(queue) == 0


async def test_a_sync_handler_works_and_runs_in_a_worker_thread(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1", b"2")
    threads: list[threading.Thread] = []
    bodies: list[bytes] = []
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=2, flush_interval=0.5)
    def handle(messages: list[Message]) -> None:
        threads.append(threading.current_thread())
        bodies.extend(m.body for m in messages)
        token.run_sync_soon(done.set)

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await done.wait()
    assert bodies == [b"1", b"2"]
    assert threads and threads[0] is not threading.main_thread()
    assert await broker.ready(queue) == 0


async def test_one_route_consumes_several_queues(
    make_app: Callable[..., App], broker: Broker
) -> None:
    orders = await broker.queue("orders")
    retry = await broker.queue("retry")
    await broker.publish(orders, b"o1", b"o2")
    await broker.publish(retry, b"r1")
    seen = Seen()
    app = make_app()

    @app.amqp.consume([orders, retry], bulk_size=1)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(3)
    assert sorted((m.queue, m.body) for m in seen.messages) == [
        (orders, b"o1"),
        (orders, b"o2"),
        (retry, b"r1"),
    ]
    assert await broker.ready(orders) == 0
    assert await broker.ready(retry) == 0


async def test_concurrency_2_overlaps_two_slow_handler_calls_and_never_more(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1", b"2", b"3", b"4", b"5")
    seen = Seen()
    running = 0
    most = 0
    app = make_app()

    @app.amqp.consume(queue, concurrency=2)
    async def handle(messages: list[Message]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await trio.sleep(0.3)
        finally:
            running -= 1
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(5)
    assert most == 2
    assert sorted(seen.bodies) == [b"1", b"2", b"3", b"4", b"5"]
    assert await broker.ready(queue) == 0


# ------------------------------------------------------------------------- publishing


async def test_publish_bytes_str_and_dict_from_the_test_body_and_from_a_handler(
    make_app: Callable[..., App], broker: Broker
) -> None:
    inbox = await broker.queue("inbox")
    outbox = await broker.queue("outbox")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(inbox)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            await app.amqp.publish({"got": m.body.decode()}, routing_key=outbox)
        seen.add(messages)

    async with open_app(app):
        await app.amqp.publish(b"raw \x00 bytes", routing_key=inbox)
        await app.amqp.publish("text é", routing_key=inbox)
        await app.amqp.publish({"n": 1, "s": "é"}, routing_key=inbox)
        await seen.wait_for(3)
        await broker.wait_ready(outbox, 3)
    got = seen.messages
    assert [m.body for m in got] == [
        b"raw \x00 bytes",
        "text é".encode(),
        json.dumps({"n": 1, "s": "é"}).encode(),
    ]
    assert got[2].json() == {"n": 1, "s": "é"}
    assert got[2].properties.content_type == "application/json"
    assert got[0].properties.content_type is None
    replies = await broker.drain(outbox)
    assert [json.loads(d.body) for d in replies] == [
        {"got": "raw \x00 bytes"},
        {"got": "text é"},
        {"got": json.dumps({"n": 1, "s": "é"})},
    ]
    assert all(d.properties.content_type == "application/json" for d in replies)


async def test_mandatory_publish_to_an_unroutable_key_raises_message_returned(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    nowhere = broker.name("nowhere")  # never declared
    async with open_app(make_app()) as app:
        with trio.fail_after(MUST_HAPPEN), pytest.raises(MessageReturnedError):
            await app.amqp.publish(b"lost?", routing_key=nowhere, mandatory=True)
        # Without mandatory the broker drops it silently; the channel stays usable.
        await app.amqp.publish(b"dropped", routing_key=nowhere)
        await app.amqp.publish(b"kept", routing_key=queue, mandatory=True)
    assert [d.body for d in await broker.drain(queue)] == [b"kept"]


async def test_publish_needs_a_running_app(make_app: Callable[..., App]) -> None:
    with pytest.raises(RuntimeError, match="running"):
        await make_app().amqp.publish(b"x", routing_key="anywhere")


# ---------------------------------------------------------------------------- routing


async def test_routes_registered_on_a_running_app_start_at_once(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    seen = Seen()
    async with open_app(make_app()) as app:
        # A confirmed publish proves the app's connection is up before the route exists.
        await app.amqp.publish(b"waiting", routing_key=queue)

        @app.amqp.consume(queue)
        async def handle(messages: list[Message]) -> None:
            seen.add(messages)

        await seen.wait_for(1, within=10)
        await broker.publish(queue, b"later")
        await seen.wait_for(2)
    assert seen.bodies == [b"waiting", b"later"]
    assert await broker.ready(queue) == 0


async def test_open_app_block_begins_with_the_connection_open(
    make_app: Callable[..., App], wire: Wire
) -> None:
    """open_app's docstring: "the app is started (hooks run, connections open) when the
    block begins" — for an app that uses the broker (here: asked to, with no route)."""
    app = make_app(amqp_url=wire.url)
    app.amqp.enable()
    async with open_app(app):
        sent = [(cls, method) for cls, method, _ in wire.frames()]
        assert CONNECTION_OPEN in sent, "the block began before the AMQP connection was open"


async def test_a_missing_queue_is_logged_and_consumed_once_it_exists(
    make_app: Callable[..., App], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker")
    queue = broker.name("late")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await trio.sleep(1)
        assert app.running
        errors = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR and queue in r.getMessage()
        ]
        assert errors, "a missing queue must be logged as an error"
        assert "does not exist" in errors[0]
        await broker.declare(queue)
        await broker.publish(queue, b"finally")
        await seen.wait_for(1)
    assert seen.bodies == [b"finally"]
    assert await broker.ready(queue) == 0


async def test_declare_true_creates_the_queue_durable(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("declared")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, declare=True)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await eventually(lambda: broker.exists(queue), bool)
        await broker.publish(queue, b"hello")
        await seen.wait_for(1)
    # Re-declaring with the same durability succeeds; with another it is refused (406).
    channel = await broker.channel()
    await channel.queue_declare(queue, durable=True)
    with pytest.raises(PreconditionFailedError):
        await channel.queue_declare(queue, durable=False)


# ---------------------------------------------------------------------------- shutdown


async def test_shutdown_from_a_handler_makes_serve_return(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        app.shutdown()

    with trio.fail_after(MUST_HAPPEN):
        async with trio.open_nursery() as nursery:
            started = await nursery.start(app.serve)
            assert started is app
            await broker.publish(queue, b"stop")
        # serve() returned, so the nursery could close.
    assert not app.running
    assert seen.bodies == [b"stop"]
    assert await broker.ready(queue) == 0  # its decision went out before the close


async def test_shutdown_from_a_sync_handler_thread_makes_serve_return(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    bodies: list[bytes] = []
    app = make_app()

    @app.amqp.consume(queue)
    def handle(messages: list[Message]) -> None:
        bodies.extend(m.body for m in messages)
        app.shutdown()

    with trio.fail_after(MUST_HAPPEN):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve)
            await broker.publish(queue, b"stop")
    assert bodies == [b"stop"]
    assert await broker.ready(queue) == 0


async def test_timeit_works_in_a_handler(make_app: Callable[..., App], broker: Broker) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1")
    reports: list[tuple[str, float]] = []

    async def report(*, name: str, seconds: float, **_: Any) -> None:
        reports.append((name, seconds))

    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue)
    @Timeit("handler", report)
    async def handle(messages: list[Message]) -> None:
        async with Timeit("write", report):
            await trio.sleep(0.05)
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(1)
    assert [name for name, _ in reports] == ["write", "handler"]
    assert all(seconds >= 0.04 for _, seconds in reports)
    assert await broker.ready(queue) == 0


async def test_leaving_open_app_requeues_a_partial_bulk_at_once(
    make_app: Callable[..., App], broker: Broker, decisions: list[Decision]
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1", b"2", b"3")
    seen = Seen()
    app = make_app()

    @app.amqp.consume(queue, bulk_size=5, flush_interval=60)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await broker.wait_ready(queue, 0)  # all three delivered, waiting in the bulk
        await trio.sleep(0.3)
        leaving = trio.current_time()
    took = trio.current_time() - leaving
    assert took < 5, f"shutdown waited {took:.1f} s: it must not wait for the flush"
    assert seen.bulks == []
    assert await broker.ready(queue) == 3
    assert all(d.method != "ack" for d in decisions), decisions
    # Requeued by the app itself (not merely returned when the channel closed).
    assert decisions[0] == Decision("nack", 3, multiple=True, requeue=True)
    redelivered = await broker.drain(queue)
    assert [(d.body, d.redelivered) for d in redelivered] == [
        (b"1", True),
        (b"2", True),
        (b"3", True),
    ]


async def test_shutdown_cancels_the_consumers_before_requeueing_buffered_messages(
    make_app: Callable[..., App], broker: Broker, wire: Wire
) -> None:
    """docs/amqp.md: "cancel consumers first, ..., return buffered-but-unhandled deliveries".

    Requeueing while a consumer is still active lets the broker hand the same messages
    straight back to the stopping worker, which must reject them again (every round trip
    counts as a redelivery, towards a quorum queue's delivery limit).

    The stage: a route on two queues; a slow call handles the message of queue A while three
    messages of queue B wait in the batcher behind it (their channel has nothing undecided
    ahead of them, so their requeue can go out at once).
    """
    queue_a = await broker.queue("a")
    queue_b = await broker.queue("b")
    await broker.publish(queue_a, b"slow")
    started = trio.Event()
    seen = Seen()
    app = make_app(amqp_url=wire.url)

    @app.amqp.consume([queue_a, queue_b])
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)
        started.set()
        await trio.sleep(0.5)

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await started.wait()
        await broker.publish(queue_b, b"1", b"2", b"3")
        await broker.wait_ready(queue_b, 0)
        await trio.sleep(0.2)
    methods = [(cls, method) for cls, method, _ in wire.frames()]
    cancel = methods.index(BASIC_CANCEL)
    requeues = [i for i, m in enumerate(methods) if m in (BASIC_NACK, BASIC_REJECT)]
    assert seen.bodies == [b"slow"]
    assert requeues, "the buffered messages must be requeued explicitly"
    assert cancel < requeues[0], "Basic.Cancel must go out before the buffered are requeued"
    assert len(requeues) == 1, "requeued messages were delivered to the stopping worker again"
    assert await broker.ready(queue_a) == 0
    assert await broker.ready(queue_b) == 3


async def test_a_handler_running_at_shutdown_finishes_within_the_grace_period_and_is_acked(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1", b"2")
    started = trio.Event()
    finished: list[int] = []
    app = make_app(grace_period=5)

    @app.amqp.consume(queue, bulk_size=2, flush_interval=0.2)
    async def handle(messages: list[Message]) -> None:
        started.set()
        await trio.sleep(1)
        finished.append(len(messages))

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await started.wait()
        leaving = trio.current_time()
    took = trio.current_time() - leaving
    assert finished == [2]
    assert 0.8 <= took < 5
    assert await broker.ready(queue) == 0


async def test_a_handler_past_the_grace_period_is_cancelled_and_its_messages_requeued(
    make_app: Callable[..., App], broker: Broker, decisions: list[Decision]
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, b"1", b"2")
    started = trio.Event()
    outcome: list[str] = []
    app = make_app(grace_period=1)

    @app.amqp.consume(queue, bulk_size=2, flush_interval=0.2)
    async def handle(messages: list[Message]) -> None:
        started.set()
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        outcome.append("finished")

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await started.wait()
        leaving = trio.current_time()
    took = trio.current_time() - leaving
    assert outcome == ["cancelled"]
    assert 0.8 <= took < 6
    assert await broker.ready(queue) == 2
    assert [(d.method, d.tag, d.requeue) for d in decisions] == [("nack", 2, True)]


# --------------------------------------------------------------------- ack coalescing


async def test_1024_messages_in_bulks_of_256_cost_at_most_8_ack_frames_on_the_wire(
    make_app: Callable[..., App], broker: Broker, wire: Wire
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, *[b'{"n": %d}' % i for i in range(1024)])
    seen = Seen()
    app = make_app(amqp_url=wire.url, prefetch=1024)

    @app.amqp.consume(queue, bulk_size=256, flush_interval=5)
    async def handle(messages: list[Message]) -> None:
        seen.add(messages)

    async with open_app(app):
        await seen.wait_for(1024)
        await broker.wait_ready(queue, 0)
    assert [len(bulk) for bulk in seen.bulks] == [256] * 4
    frames = wire.frames()
    acks = [args for cls, method, args in frames if (cls, method) == BASIC_ACK]
    rejections = [m for cls, m, _ in frames if (cls, m) in (BASIC_NACK, BASIC_REJECT)]
    assert rejections == []
    assert 1 <= len(acks) <= 8, f"{len(acks)} ack frames for 1024 messages"
    tags = [struct.unpack_from(">Q", args)[0] for args in acks]
    multiple = [bool(args[8] & 1) for args in acks]
    assert all(multiple), list(zip(tags, multiple, strict=True))
    assert tags == sorted(tags)
    assert tags[-1] == 1024
    assert await broker.ready(queue) == 0


async def test_an_http_request_finishing_during_shutdown_can_still_publish(
    make_app: Callable[..., App], broker: Broker
) -> None:
    """Shutdown stops every backend at once, but the AMQP connections stay open until the
    HTTP server, SSE streams and timers have drained: a request that publishes in its grace
    period succeeds, and its message is in the queue."""
    queue = await broker.queue()
    entered = trio.Event()
    release = trio.Event()
    app = make_app(http_port=0)

    @app.http.post("/slow")
    async def slow(request: Request) -> dict[str, bool]:
        entered.set()
        await release.wait()
        await app.amqp.publish(b"published while stopping", routing_key=queue)
        return {"ok": True}

    statuses: list[int] = []
    async with trio.open_nursery() as nursery, open_app(app):

        async def client() -> None:
            async with httpx.AsyncClient(timeout=MUST_HAPPEN) as http:
                reply = await http.post(f"http://127.0.0.1:{app.http.port}/slow")
                statuses.append(reply.status_code)

        nursery.start_soon(client)
        with trio.fail_after(MUST_HAPPEN):
            await entered.wait()
        app.shutdown()
        await trio.sleep(0.3)  # the routes stop; the connection must stay
        assert app.shutting_down
        release.set()
    assert statuses == [200]
    assert [d.body for d in await broker.drain(queue)] == [b"published while stopping"]
