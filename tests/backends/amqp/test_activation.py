"""The AMQP backend runs only when the app uses the broker (docs/amqp.md, "When the backend
runs"): a consume or RPC route, ``app.amqp.enable()``, or — started on demand — the first
``publish()``/``call()`` of a running app. An HTTP-only app never dials the broker, and its
``/health`` knows nothing of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from tests.support.broker import MUST_HAPPEN, Broker
from tests.support.fake_servers import free_port
from trioworker import App, Message, Request, open_app

pytestmark = pytest.mark.broker


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while not predicate():  # noqa: ASYNC110 - polling
            await trio.sleep(0.02)


def closed_port_url() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


@contextlib.asynccontextmanager
async def counting_listener() -> AsyncIterator[tuple[str, list[int]]]:
    """A port that only counts the TCP connections made to it (it never speaks AMQP)."""
    accepted: list[int] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def count(stream: trio.SocketStream) -> None:
        accepted.append(1)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, count, listeners)
        yield f"amqp://guest:guest@127.0.0.1:{port}/%2F", accepted
        nursery.cancel_scope.cancel()


async def test_an_http_only_app_never_dials_the_broker() -> None:
    async with counting_listener() as (url, accepted):
        app = App(amqp_url=url, http_port=0, name="http-only", grace_period=5.0)

        @app.http.get("/hello")
        async def hello(request: Request) -> dict[str, str]:
            return {"hello": "world"}

        with trio.fail_after(MUST_HAPPEN):
            async with open_app(app), httpx.AsyncClient(base_url=app.http.url) as client:
                reply = await client.get("/hello")
                health = await client.get("/health")
                await trio.sleep(0.3)  # a connection attempt started in the background
        assert not app.amqp.active
        assert accepted == [], "an HTTP-only app must not connect to the broker"
    assert (reply.status_code, reply.json()) == (200, {"hello": "world"})
    assert health.status_code == 200
    assert "amqp" not in health.json()["backends"]
    assert list(app.amqp.supervisors) == []


async def test_a_publish_only_app_starts_the_backend_on_its_first_publish(
    amqp_url: str, broker: Broker
) -> None:
    queue = await broker.queue()
    app = App(amqp_url=amqp_url, http_port=0, name="publish-only", grace_period=5.0)

    @app.http.post("/orders")
    async def order(request: Request) -> dict[str, bool]:
        await app.amqp.publish(await request.json(), routing_key=queue, timeout=MUST_HAPPEN)
        return {"published": True}

    with trio.fail_after(MUST_HAPPEN):
        async with open_app(app), httpx.AsyncClient(base_url=app.http.url) as client:
            assert "amqp" not in app.health(), "no route: the backend waits to be used"
            reply = await client.post("/orders", json={"id": 1})
            assert app.health()["amqp"].ok
            assert (await client.get("/health")).json()["backends"]["amqp"]["ok"] is True
    assert (reply.status_code, reply.json()) == (200, {"published": True})
    assert [d.body for d in await broker.drain(queue)] == [b'{"id": 1}']


async def test_call_from_an_app_without_routes_starts_the_backend(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    server = make_app()

    @server.amqp.rpc(queue)
    async def double(message: Message) -> int:
        return 2 * int(message.json())

    caller = make_app()
    async with open_app(server):
        await wait_until(lambda: server.health()["amqp"].ok, "the RPC route consumes")
        async with open_app(caller):
            assert "amqp" not in caller.health()
            with trio.fail_after(MUST_HAPPEN):
                assert await caller.amqp.call(queue, 21, timeout=MUST_HAPPEN) == 42


async def test_a_publish_waits_for_the_connection_within_its_timeout() -> None:
    app = App(amqp_url=closed_port_url(), name="publish-timeout", grace_period=5.0)
    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN), pytest.raises(TimeoutError, match=r"within 0\.5 s"):
            await app.amqp.publish(b"x", routing_key="nowhere", timeout=0.5)
        # It started the backend, which keeps trying: /health now tells the truth.
        assert app.health()["amqp"] == app.amqp.health()
        assert "connection 'default' is down" in app.amqp.health().detail
        with pytest.raises(TimeoutError, match=r"no connection within 0\.5 s"):
            await app.amqp.call("nowhere", 1, timeout=0.5)


@pytest.mark.parametrize("uses", ["route", "enable"])
async def test_an_app_that_uses_the_broker_reports_it_down_in_health(uses: str) -> None:
    app = App(amqp_url=closed_port_url(), http_port=0, name="route-down", grace_period=5.0)
    if uses == "route":

        @app.amqp.consume("never-consumed")
        async def handle(messages: list[Message]) -> None: ...

    else:
        app.amqp.enable()
    assert app.amqp.active
    with trio.fail_after(MUST_HAPPEN):
        async with open_app(app), httpx.AsyncClient(base_url=app.http.url) as client:
            health = await client.get("/health")
    assert health.status_code == 503
    amqp = health.json()["backends"]["amqp"]
    assert amqp["ok"] is False and "connection 'default' is down" in amqp["detail"]


async def test_enable_on_a_running_app_connects_at_once(amqp_url: str) -> None:
    app = App(amqp_url=amqp_url, name="enable-late", grace_period=5.0)
    async with open_app(app):
        assert "amqp" not in app.health()
        app.amqp.enable()
        await wait_until(lambda: any(sup.up for sup in app.amqp.supervisors), "connected")
        assert [sup.name for sup in app.amqp.supervisors] == ["default"]
        assert app.health()["amqp"].ok
    assert not app.running


async def test_the_backend_started_on_demand_is_stopped_and_starts_again_next_serve(
    amqp_url: str, broker: Broker
) -> None:
    queue = await broker.queue()
    app = App(amqp_url=amqp_url, name="on-demand-twice", grace_period=5.0)
    for body in (b"first", b"second"):
        with trio.fail_after(MUST_HAPPEN):
            async with open_app(app):
                assert "amqp" not in app.health()
                await app.amqp.publish(body, routing_key=queue)
        assert all(not sup.up for sup in app.amqp.supervisors)
    assert [d.body for d in await broker.drain(queue)] == [b"first", b"second"]


async def test_a_timer_publishing_while_the_app_starts_starts_the_backend(
    amqp_url: str, broker: Broker
) -> None:
    """The timer's first run comes while the HTTP server is still starting: the app takes
    backends that become active during startup, not only once it is up."""
    queue = await broker.queue()
    app = App(amqp_url=amqp_url, http_port=0, name="timer-publisher", grace_period=5.0)
    published = trio.Event()

    @app.every(3600, run_at_startup=True)
    async def tick(a: App) -> None:
        await a.amqp.publish(b"tick", routing_key=queue)
        published.set()

    with trio.fail_after(MUST_HAPPEN):
        async with open_app(app):
            await published.wait()
    assert [d.body for d in await broker.drain(queue)] == [b"tick"]
