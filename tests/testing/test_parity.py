"""Parity: one suite of behaviour tests, run on the memory broker and on RabbitMQ.

Every test runs twice — ``[memory]`` (a fresh ``MemoryBroker``, no network) and
``[rabbitmq]`` (the suite's real broker) — through the same ``TestClient`` calls, and
asserts the same outcomes, written out as RabbitMQ gives them. A fake that routes ``#``
differently, ignores an ``expiration`` or forgets ``x-death`` fails its half here.

Only what both brokers can show is asserted: what handlers saw, what queues hold
(``await client.queue(name).fetch()``), what calls and publishes return or raise. The
memory broker's extras (settle counts, ``client.published``) are tested on their own in
test_client_memory.py. Delays are short (RabbitMQ waits for them for real).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trioworker import App, Binding, Exchange, Message, Queue, RemoteError, Retry
from trioworker.amqp import (
    AMQPError,
    MessageReturnedError,
    NoRouteError,
    NotFoundError,
    PublishError,
    connect,
)
from trioworker.testing import NoReplyError, TestClient

#: Retry delays on RabbitMQ are waited for for real: keep them short.
SHORT = 0.05


class World:
    """One broker for one test: names that do not collide, apps, clients, cleanup."""

    def __init__(self, kind: str, amqp_url: str) -> None:
        self.kind = kind
        self.url = amqp_url
        self.token = secrets.token_hex(3)
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, prefix: str) -> str:
        """A queue name unique to this test (deleted afterwards on RabbitMQ)."""
        name = f"tw-parity-{prefix}-{self.token}"
        self.queues.append(name)
        return name

    def track(self, *names: str) -> None:
        """Queues the app makes on its own (``.dlq``, ``.retry.<ms>``): delete them too."""
        self.queues.extend(names)

    def exchange(self, prefix: str, type: str) -> Exchange:
        name = f"tw-parity-{prefix}-{self.token}"
        self.exchanges.append(name)
        return Exchange(name, type=type, auto_delete=False)  # type: ignore[arg-type]

    def app(self) -> App:
        return App(amqp_url=self.url, name=f"parity-{self.token}", grace_period=2.0)

    def client(self, app: App) -> TestClient:
        return TestClient(app, broker=None if self.kind == "memory" else self.url)

    async def cleanup(self) -> None:
        if self.kind != "rabbitmq":
            return
        with trio.move_on_after(10), contextlib.suppress(AMQPError):
            async with connect(self.url) as conn:
                for name in dict.fromkeys(self.queues):
                    async with conn.channel() as channel:
                        await channel.queue_delete(name)
                for name in dict.fromkeys(self.exchanges):
                    async with conn.channel() as channel:
                        await channel.exchange_delete(name)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
async def world(request: pytest.FixtureRequest, amqp_url: str) -> AsyncIterator[World]:
    world = World(request.param, amqp_url)
    try:
        yield world
    finally:
        with trio.CancelScope(shield=True):
            await world.cleanup()


async def bodies(client: TestClient, queue: str) -> list[Any]:
    return [m.json() for m in await client.queue(queue).fetch()]


# ------------------------------------------------------------------ routing


async def routed(
    world: World, exchange: Exchange, bindings: dict[str, list[Binding]], publishes: list[Any]
) -> dict[str, list[Any]]:
    """Bind one queue per entry, publish ``(routing_key, headers)`` pairs carrying their
    index, and return what each queue got."""
    app = world.app()
    names = {key: world.name(key) for key in bindings}
    async with world.client(app) as client:
        await client.declare(*(Queue(names[k], bindings=b) for k, b in bindings.items()))
        for i, (routing_key, headers) in enumerate(publishes):
            await client.publish(
                i, routing_key=routing_key, exchange=exchange.name, headers=headers
            )
        return {key: await bodies(client, name) for key, name in names.items()}


async def test_direct_exchange_routes_by_the_exact_key(world: World) -> None:
    ex = world.exchange("direct", "direct")
    got = await routed(
        world,
        ex,
        {"a": [Binding(ex, "a")], "ab": [Binding(ex, "a"), Binding(ex, "b")]},
        [("a", None), ("b", None), ("c", None), ("A", None)],
    )
    assert got == {"a": [0], "ab": [0, 1]}


async def test_fanout_exchange_copies_to_every_bound_queue(world: World) -> None:
    ex = world.exchange("fanout", "fanout")
    got = await routed(
        world,
        ex,
        {"one": [Binding(ex, "ignored")], "two": [Binding(ex)]},
        [("x", None), ("", None)],
    )
    assert got == {"one": [0, 1], "two": [0, 1]}


TOPIC_KEYS = [
    "order",  # 0
    "order.created",  # 1
    "order.eu.created",  # 2
    "order.eu.x.done",  # 3
    "order.done",  # 4
    "invoice.created",  # 5
    "order..created",  # 6: an empty word is a word
    "",  # 7
]


async def test_topic_exchange_star_is_one_word_hash_is_zero_or_more(world: World) -> None:
    ex = world.exchange("topic", "topic")
    patterns = {
        "star": "order.*",
        "hash": "order.#",
        "all": "#",
        "created": "*.created",
        "middle": "order.#.done",
        "two-stars": "order.*.created",
        "exact": "order.created",
    }
    got = await routed(
        world,
        ex,
        {name: [Binding(ex, p)] for name, p in patterns.items()},
        [(key, None) for key in TOPIC_KEYS],
    )
    assert got == {
        "star": [1, 4],
        "hash": [0, 1, 2, 3, 4, 6],
        "all": [0, 1, 2, 3, 4, 5, 6, 7],
        "created": [1, 5],
        "middle": [3, 4],
        "two-stars": [2, 6],
        "exact": [1],
    }


async def test_headers_exchange_matches_all_or_any(world: World) -> None:
    ex = world.exchange("headers", "headers")
    got = await routed(
        world,
        ex,
        {
            "all": [Binding(ex, arguments={"x-match": "all", "kind": "order", "region": "eu"})],
            "any": [Binding(ex, arguments={"x-match": "any", "kind": "order", "region": "eu"})],
            "default": [Binding(ex, arguments={"kind": "invoice"})],  # x-match defaults to all
        },
        [
            ("", {"kind": "order", "region": "eu"}),  # 0
            ("", {"kind": "order", "region": "us"}),  # 1
            ("", {"region": "eu", "extra": 1}),  # 2
            ("", {"kind": "invoice"}),  # 3
            ("", None),  # 4
        ],
    )
    assert got == {"all": [0], "any": [0, 1, 2], "default": [3]}


# ------------------------------------------------------- bulks and decisions


async def test_a_bulk_s_per_message_decisions(world: World) -> None:
    app = world.app()
    queue, dlq = world.name("orders"), world.name("orders-dlq")
    seen: list[tuple[list[str], bool]] = []

    @app.amqp.consume(
        [Queue(queue, dead_letter=dlq)],
        bulk_size=4,
        flush_interval=0.2,
        declare=True,
    )
    async def handle(messages: list[Message]) -> None:
        seen.append(([m.json()["do"] for m in messages], any(m.redelivered for m in messages)))
        for m in messages:
            body = m.json()["do"]
            if body == "reject":
                m.reject(requeue=False)
            elif body == "requeue" and not m.redelivered:
                m.reject(requeue=True)

    async with world.client(app) as client:
        for body in ["ok", "reject", "requeue", "ok2"]:
            await client.publish({"do": body}, routing_key=queue)
        await client.drain()
        dead = await client.queue(dlq).fetch()
        remaining = await client.queue(queue).count()

    assert seen[0] == (["ok", "reject", "requeue", "ok2"], False)  # one bulk of four
    assert seen[1:] == [(["requeue"], True)]  # requeued, back with redelivered set
    assert [m.json() for m in dead] == [{"do": "reject"}]
    assert remaining == 0


async def test_dead_lettering_records_x_death(world: World) -> None:
    app = world.app()
    queue, dlq = world.name("work"), world.name("work-dlq")

    @app.amqp.consume([Queue(queue, dead_letter=dlq)], declare=True)
    async def handle(messages: list[Message]) -> None:
        messages[0].reject(requeue=False)

    async with world.client(app) as client:
        await client.publish({"n": 1}, routing_key=queue, headers={"mine": "kept"})
        await client.drain()
        (dead,) = await client.queue(dlq).fetch()

    assert dead.json() == {"n": 1}
    assert dead.routing_key == dlq  # x-dead-letter-routing-key replaces it
    headers = dead.headers
    assert headers["mine"] == "kept"
    (death,) = headers["x-death"]
    assert death["queue"] == queue
    assert death["reason"] == "rejected"
    assert death["count"] == 1
    assert death["exchange"] == ""
    assert death["routing-keys"] == [queue]
    assert headers["x-first-death-queue"] == queue
    assert headers["x-first-death-reason"] == "rejected"


# --------------------------------------------------------------------- TTL


async def expired_into_route(
    world: World, queue_arguments: dict[str, Any], ttl: float | None
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Publish to a queue nothing consumes, whose messages expire into one a route reads."""
    app = world.app()
    waiting, landing = world.name("waiting"), world.name("landing")
    seen: list[Any] = []
    deaths: list[dict[str, Any]] = []

    @app.amqp.consume([Queue(landing)], declare=True)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            seen.extend(m.json())
            deaths.extend(m.headers["x-death"])

    async with world.client(app) as client:
        await client.declare(Queue(waiting, arguments=queue_arguments, dead_letter=landing))
        await client.publish(["short"], routing_key=waiting, ttl=ttl)
        await client.drain(queues=[waiting])
        left = await client.queue(waiting).count()
    assert left == 0
    return seen, deaths


async def test_a_queue_ttl_expires_messages_into_its_dead_letter_queue(world: World) -> None:
    seen, deaths = await expired_into_route(world, {"x-message-ttl": 50}, ttl=None)
    assert seen == ["short"]
    assert [(d["reason"], d["count"]) for d in deaths] == [("expired", 1)]


async def test_a_message_ttl_expires_it_into_the_dead_letter_queue(world: World) -> None:
    seen, deaths = await expired_into_route(world, {}, ttl=0.05)
    assert seen == ["short"]
    (death,) = deaths
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "50"  # the expiration is taken off the copy


# --------------------------------------------------------------------- RPC


async def test_rpc_replies_errors_and_requests_nobody_answers(world: World) -> None:
    app = world.app()
    math_q, plain_q, missing = world.name("math"), world.name("plain"), world.name("nothing")

    @app.amqp.rpc(math_q, declare=True)
    async def add(message: Message) -> Any:
        a, b = message.json()
        if a < 0:
            raise ValueError("no negatives")
        return {"sum": a + b}

    @app.amqp.consume([Queue(plain_q)], declare=True)
    async def plain(messages: list[Message]) -> None:
        messages[0].reject(requeue=False)  # a consume route: no reply, ever

    async with world.client(app) as client:
        assert await client.call(math_q, [1, 2]) == {"sum": 3}
        assert [await client.call(math_q, [i, i]) for i in range(3)] == [
            {"sum": 0},
            {"sum": 2},
            {"sum": 4},
        ]
        with pytest.raises(RemoteError) as remote:
            await client.call(math_q, [-1, 2])
        assert (remote.value.type, remote.value.message) == ("ValueError", "no negatives")
        with pytest.raises(NoRouteError):
            await client.call(missing, [1, 2])
        with pytest.raises(NoReplyError, match=plain_q):
            await client.call(plain_q, [1, 2], timeout=30)


# ---------------------------------------------------- confirms and returns


async def test_publisher_confirms_and_mandatory_returns(world: World) -> None:
    app = world.app()
    queue, nowhere = world.name("in"), world.name("nowhere")
    outcomes: list[str] = []

    @app.amqp.consume([Queue(queue)], declare=True)
    async def forward(messages: list[Message]) -> None:
        try:
            await app.amqp.publish({"fwd": 1}, routing_key=nowhere, mandatory=True)
        except PublishError as exc:
            outcomes.append(type(exc).__name__)
        await app.amqp.publish({"fwd": 2}, routing_key=nowhere)  # confirmed, dropped
        outcomes.append("confirmed")

    async with world.client(app) as client:
        await client.publish("anything", routing_key=nowhere)  # unroutable: still confirmed
        with pytest.raises(MessageReturnedError):
            await client.publish("anything", routing_key=nowhere, mandatory=True)
        await client.publish("go", routing_key=queue, mandatory=True)
        await client.drain()
        with pytest.raises(NotFoundError):  # 404: the channel is closed, the client goes on
            await client.publish("x", routing_key="k", exchange=world.name("no-such-exchange"))
        await client.publish("go", routing_key=queue)
        await client.drain()
    assert outcomes == ["MessageReturnedError", "confirmed"] * 2


# ------------------------------------------------------------------ retries


async def test_retries_wait_their_delays_then_go_to_the_dead_letter_queue(world: World) -> None:
    app = world.app()
    queue = world.name("flaky")
    world.track(f"{queue}.dlq", f"{queue}.retry.50", f"{queue}.retry.100")
    attempts: list[tuple[int, bool]] = []

    @app.amqp.consume(
        [Queue(queue)],
        declare=True,
        retry=Retry(attempts=3, delays=(SHORT, 2 * SHORT), jitter=0),
    )
    async def flaky(messages: list[Message]) -> None:
        for m in messages:
            attempts.append((m.attempt, m.redelivered))
        raise ConnectionError("the database is down")

    async with world.client(app) as client:
        await client.publish({"id": 7}, routing_key=queue)
        await client.drain()
        (dead,) = await client.queue(f"{queue}.dlq").fetch()
        left = await client.queue(queue).count()

    assert attempts == [(1, False), (2, False), (3, False)]
    assert dead.json() == {"id": 7}
    assert dead.headers["x-trioworker-reason"] == "exhausted"
    assert dead.headers["x-trioworker-attempts"] == 3
    assert dead.headers["x-trioworker-exception"] == "ConnectionError"
    assert dead.headers["x-trioworker-original-queue"] == queue
    assert left == 0


async def test_max_length_drops_the_oldest_into_the_dead_letter_queue(world: World) -> None:
    app = world.app()
    queue, dlq = world.name("bounded"), world.name("bounded-dlq")
    async with world.client(app) as client:
        await client.declare(Queue(queue, arguments={"x-max-length": 2}, dead_letter=dlq))
        for i in range(4):
            await client.publish(i, routing_key=queue)
        assert await bodies(client, queue) == [2, 3]
        dead = await client.queue(dlq).fetch()
    assert [m.json() for m in dead] == [0, 1]
    assert [m.headers["x-death"][0]["reason"] for m in dead] == ["maxlen", "maxlen"]
