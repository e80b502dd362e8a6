"""TestClient on the memory broker: the app runs for real, no network, no waiting."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trioworker import (
    Actions,
    App,
    Message,
    Queue,
    Request,
    Retry,
    SSEEvent,
    StartupError,
)
from trioworker.pipeline import Health
from trioworker.testing import DrainTimeout, TestClient


def make_app(**options: Any) -> App:
    options.setdefault("name", "under-test")
    options.setdefault("grace_period", 2.0)
    return App(**options)


async def test_the_design_example_runs_as_written() -> None:
    app = make_app()

    @app.amqp.consume([Queue("orders", dead_letter="orders.dlq")], declare=True)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            if m.json()["qty"] <= 0:
                m.reject(requeue=False)

    @app.amqp.rpc("math.add")
    async def add(message: Message) -> dict[str, int]:
        a, b = message.json()
        return {"sum": a + b}

    async with TestClient(app) as client:
        await client.publish({"qty": 0}, routing_key="orders")
        await client.drain()
        assert [m.json() for m in client.queue("orders.dlq").messages] == [{"qty": 0}]
        assert await client.call("math.add", [1, 2]) == {"sum": 3}
        assert (await client.http.get("/health")).status_code == 200


async def test_drain_hands_over_a_bulk_waiting_for_its_flush_interval() -> None:
    app = make_app()
    bulks: list[list[int]] = []

    @app.amqp.consume(["numbers"], declare=True, bulk_size=100, flush_interval=60)
    async def handle(messages: list[Message]) -> None:
        bulks.append([m.json() for m in messages])

    async with TestClient(app) as client:
        for i in range(3):
            await client.publish(i, routing_key="numbers")
        await client.drain(timeout=5)  # far less than the 60 s flush interval
        assert bulks == [[0, 1, 2]]
        stats = app.amqp.routes[0].stats.batcher
        assert (stats.flushed_by_time, stats.flushed_by_size) == (1, 0)


async def test_drain_skips_a_long_retry_delay() -> None:
    app = make_app()
    attempts: list[int] = []

    @app.amqp.consume(["jobs"], declare=True, retry=Retry(attempts=3, delays=(60, 600)))
    async def handle(messages: list[Message]) -> None:
        attempts.extend(m.attempt for m in messages)
        if messages[0].attempt < 3:
            raise ConnectionError("not yet")

    async with TestClient(app) as client:
        await client.publish({"id": 1}, routing_key="jobs")
        await client.drain(timeout=5)  # an 11-minute retry schedule, skipped
        assert attempts == [1, 2, 3]
        assert client.queue("jobs.dlq").messages == []
        assert client.queue("jobs").acked == 3  # each original acked once its copy landed


async def test_drain_says_what_is_still_busy_when_it_gives_up() -> None:
    app = make_app(grace_period=0.1)  # the handler never returns: do not wait for it

    @app.amqp.consume(["stuck"], declare=True)
    async def handle(messages: list[Message]) -> None:
        await trio.sleep_forever()

    async with TestClient(app) as client:
        await client.publish({}, routing_key="stuck")
        with pytest.raises(DrainTimeout, match=r"route 'handle': .*1 running"):
            await client.drain(timeout=0.3)


async def test_the_memory_broker_counts_how_messages_were_settled() -> None:
    app = make_app()

    @app.amqp.consume([Queue("q", dead_letter="q.dead")], declare=True, bulk_size=4)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            action = m.json()
            if action == "reject":
                m.reject(requeue=False)
            elif action == "requeue" and not m.redelivered:
                m.reject()

    async with TestClient(app) as client:
        for action in ["ack", "reject", "requeue", "ack"]:
            await client.publish(action, codec="json", routing_key="q")
        await client.drain()
        q = client.queue("q")
        assert (q.acked, q.rejected, q.requeued, q.dead_lettered) == (3, 1, 1, 1)
        assert q.messages == [] and q.unacked == [] and q.consumers == 1
        assert [m.json() for m in client.queue("q.dead").messages] == ["reject"]


async def test_published_is_what_the_app_sent_not_the_client() -> None:
    app = make_app()

    @app.amqp.consume(["in"], declare=True)
    async def forward(messages: list[Message]) -> None:
        for m in messages:
            await app.amqp.publish({"seen": m.json()}, routing_key="out")

    @app.amqp.rpc("echo")
    async def echo(message: Message) -> Any:
        return message.json()

    async with TestClient(app) as client:
        await client.publish(1, routing_key="in")
        await client.publish(2, routing_key="in")
        assert await client.call("echo", "hi") == "hi"
        await client.drain()
        published = client.published
        assert [(m.routing_key, m.json()) for m in published[:2]] == [
            ("out", {"seen": 1}),
            ("out", {"seen": 2}),
        ]
        (reply,) = published[2:]  # the RPC reply; the client's own request is not listed
        assert reply.json() == "hi" and reply.properties.correlation_id


async def test_an_app_that_fails_to_start_raises_out_of_the_block() -> None:
    app = make_app()

    @app.on_startup
    async def broken(app: App) -> None:
        raise OSError("no database")

    with pytest.raises(StartupError, match="no database"):
        async with TestClient(app):
            pytest.fail("the block must not run")


async def test_the_test_s_own_error_comes_out_unwrapped() -> None:
    app = make_app()
    with pytest.raises(KeyError):
        async with TestClient(app):
            raise KeyError("mine")
    assert not app.running


async def test_one_app_runs_under_one_client_after_another() -> None:
    app = make_app()
    seen: list[Any] = []

    @app.amqp.consume(["again"], declare=True)
    async def handle(messages: list[Message]) -> None:
        seen.extend(m.json() for m in messages)

    for round_ in range(2):
        client = TestClient(app)
        async with client:
            with pytest.raises(RuntimeError, match="already running"):
                await client.__aenter__()
            await client.publish(round_, routing_key="again")
            await client.drain()
        with pytest.raises(RuntimeError, match="inside `async with"):
            await client.publish(0, routing_key="again")
    assert seen == [0, 1]  # each client a fresh broker: nothing left over from the first
    assert app.amqp.url == App().amqp.url  # the redirect was undone


async def test_http_routes_are_served_in_process_without_a_socket() -> None:
    app = make_app()

    @app.http.post("/orders/{id:int}")
    async def create(request: Request) -> dict[str, Any]:
        return {"id": request.path_params["id"], "body": await request.json()}

    async with TestClient(app) as client:
        response = await client.http.post("/orders/7", json={"qty": 2})
        assert response.status_code == 200
        assert response.json() == {"id": 7, "body": {"qty": 2}}
        health = (await client.http.get("/health")).json()
        assert health["status"] == "ok"
        assert not app.http.serving  # no port was bound
        assert (await client.http.get("/nope")).status_code == 404
    assert app.http.bind_socket  # put back


async def test_bind_http_serves_on_a_real_socket() -> None:
    app = make_app(http_port=0)

    @app.http.get("/ping")
    async def ping(request: Request) -> str:
        return "pong"

    async with TestClient(app, bind_http=True) as client:
        assert app.http.serving and app.http.port != 0
        assert str(client.http.base_url).startswith(app.http.url)
        assert (await client.http.get("/ping")).text == "pong"


async def test_sse_routes_read_the_client_s_feed() -> None:
    app = make_app()
    url = "https://events.example.com/stream?token=secret"
    got: list[tuple[str, str, str]] = []

    @app.sse.consume(url, bulk_size=10, flush_interval=60)
    async def on_events(events: list[SSEEvent]) -> None:
        got.extend((e.name, e.id, e.data) for e in events)

    async with TestClient(app) as client:
        feed = client.sse("https://events.example.com/stream")  # the query is not the stream
        feed.send("one", event="order", id="1")
        feed.send("two\nlines", id="2")
        await client.drain()
        assert got == [("order", "1", "one"), ("message", "2", "two\nlines")]
        feed.end()  # the server closes: the app reconnects, resuming after id 2
        feed.send("three", id="3")
        await client.drain()
        assert got[-1] == ("message", "3", "three")
        assert feed.connections == 2 and feed.last_event_ids == ["", "2"]


async def test_advance_runs_timers_at_their_time(mock_clock: trio.testing.MockClock) -> None:
    app = make_app()
    ticks: list[float] = []

    @app.every(1.0)
    async def tick(app: App) -> None:
        ticks.append(trio.current_time())

    async with TestClient(app) as client:
        start = trio.current_time()
        await client.advance(5.5)
        assert [round(t - start, 6) for t in ticks] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert app.timers.timers[0].skipped == 0


async def test_advance_needs_the_mock_clock() -> None:
    async with TestClient(make_app()) as client:
        with pytest.raises(RuntimeError, match="mock_clock"):
            await client.advance(1)


async def test_a_route_default_decision_still_applies() -> None:
    app = make_app()

    @app.amqp.consume(["defaults"], declare=True, on_success=Actions.REJECT)
    async def handle(messages: list[Message]) -> None:
        pass

    async with TestClient(app) as client:
        await client.publish({}, routing_key="defaults")
        await client.drain()
        assert client.queue("defaults").rejected == 1


async def test_the_app_s_vhosts_exist_on_the_memory_broker() -> None:
    app = make_app(amqp_url="amqp://guest:guest@rabbit.example.com/orders")
    seen: list[tuple[str, Any]] = []

    @app.amqp.consume(["main"], declare=True)
    async def main(messages: list[Message]) -> None:
        seen.extend(("orders", m.json()) for m in messages)

    @app.amqp.consume(["audit"], declare=True, vhost="audit")
    async def audit(messages: list[Message]) -> None:
        seen.extend(("audit", m.json()) for m in messages)

    async with TestClient(app) as client:
        await client.publish(1, routing_key="main")  # the client is on the app's vhost
        await client.drain()
        assert client.broker is not None
        assert client.broker.queues("orders") == ["main"]
        assert client.broker.queues("audit") == ["audit"]
    assert seen == [("orders", 1)]


async def test_a_broker_of_your_own_must_be_running() -> None:
    from trioworker.testing import MemoryBroker

    broker = MemoryBroker()
    with pytest.raises(RuntimeError, match="is not running"):
        async with TestClient(make_app(), broker=broker):
            pytest.fail("the block must not run")
    async with broker.running(), TestClient(make_app(), broker=broker) as client:
        assert client.broker is broker


async def test_drain_works_on_a_mock_clock_that_stands_still(
    mock_clock: trio.testing.MockClock,
) -> None:
    app = make_app(grace_period=0.1)
    handled: list[int] = []

    @app.amqp.consume(["frozen"], declare=True, bulk_size=10, retry=Retry(attempts=2))
    async def handle(messages: list[Message]) -> None:
        handled.extend(m.attempt for m in messages)
        if messages[0].attempt == 1:
            raise ConnectionError("once")

    @app.amqp.consume(["sleepy"], declare=True)
    async def sleepy(messages: list[Message]) -> None:
        await trio.sleep(3600)  # only a moved clock ends this

    async with TestClient(app) as client:
        await client.publish(1, routing_key="frozen")
        await client.drain(timeout=5)  # the flush and the retry delay need no clock
        assert handled == [1, 2]
        await client.publish(2, routing_key="sleepy")
        with pytest.raises(DrainTimeout, match=r"sleepy.*MockClock stands still"):
            await client.drain(timeout=0.2)  # real seconds: the frozen clock never gets there
        await client.advance(3600)
        await client.drain(timeout=5)


async def test_an_http_handler_publishing_starts_amqp_on_the_test_broker() -> None:
    app = make_app(amqp_url="amqp://guest:guest@unreachable.invalid/%2F")

    @app.http.post("/events")
    async def receive(request: Request) -> dict[str, bool]:
        await app.amqp.publish(await request.json(), routing_key="events", timeout=5)
        return {"queued": True}

    async with TestClient(app) as client:
        await client.declare(Queue("events"))
        response = await client.http.post("/events", json={"kind": "signup"})
        assert response.json() == {"queued": True}
        await client.drain()
        assert [m.json() for m in client.queue("events").messages] == [{"kind": "signup"}]
        assert [m.routing_key for m in client.published] == ["events"]


class CrashingBackend:
    """A backend with a bug: it raises once the app runs."""

    name = "crashing"
    active = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(0.01)
        raise ZeroDivisionError("a bug in a backend")

    def stop(self) -> None:
        pass

    def health(self) -> Health:
        return Health(True)


async def test_a_crashing_backend_comes_out_of_the_block_unwrapped() -> None:
    app = make_app()
    app.add_backend(CrashingBackend())
    with pytest.raises(ZeroDivisionError, match="a bug in a backend"):
        async with TestClient(app):
            await trio.sleep_forever()  # cancelled by the crash


async def test_concurrent_publishes_and_calls_share_the_client_s_channels() -> None:
    app = make_app()
    got: list[int] = []

    @app.amqp.consume(["many"], declare=True, bulk_size=50, flush_interval=60)
    async def handle(messages: list[Message]) -> None:
        got.extend(m.json() for m in messages)

    @app.amqp.rpc("double")
    async def double(message: Message) -> int:
        return int(message.json()) * 2

    replies: list[int] = []
    async with TestClient(app) as client:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(client.publish, i, "many")

                async def call(i: int = i) -> None:
                    replies.append(await client.call("double", i))

                nursery.start_soon(call)
        await client.drain()
    assert sorted(got) == list(range(20))
    assert sorted(replies) == [2 * i for i in range(20)]
