"""Publishing options and startup (docs/amqp.md "Publishing", "Lifecycle hooks", "Startup
errors"): persistent by default, ttl/priority/headers/codec; ``@app.on_started`` publishes;
refused credentials or vhost at the first connect are a StartupError; an unreachable broker
is retried until it appears; warnings at registration.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable

import pytest
import trio

from tests.support.broker import MUST_HAPPEN, Broker
from tests.support.helpers import take, with_credentials, with_vhost
from tests.support.proxy import open_tcp_proxy
from trioworker import App, Message, StartupError, open_app

pytestmark = pytest.mark.broker


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(MUST_HAPPEN):
        while not predicate():  # noqa: ASYNC110 - polling
            await trio.sleep(0.02)


async def test_publish_is_persistent_by_default_and_sets_ttl_priority_headers(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await broker.queue()
    channel = await broker.channel()
    consumer = await channel.basic_consume(queue, no_ack=True)
    async with open_app(make_app()) as app:
        await app.amqp.publish({"a": 1}, routing_key=queue, timeout=MUST_HAPPEN)
        await app.amqp.publish(
            b"b",
            queue,
            persistent=False,
            ttl=60,
            priority=7,
            headers={"h": "v"},
            timeout=MUST_HAPPEN,
        )
        await app.amqp.publish({"c": 3}, queue, codec="gzip+json", timeout=MUST_HAPPEN)
        first, second, third = await take(consumer, 3)
    assert first.properties.delivery_mode == 2
    assert first.properties.content_type == "application/json"
    assert second.properties.delivery_mode == 1
    assert second.properties.expiration == "60000"
    assert second.properties.priority == 7
    assert second.properties.headers == {"h": "v"}
    assert third.properties.content_encoding == "gzip"
    assert gzip.decompress(third.body) == b'{"c":3}'


async def test_on_started_hooks_publish_once_routes_consume(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = broker.name("q")
    app = make_app()
    got: list[bytes] = []
    order: list[str] = []

    @app.amqp.consume(queue, declare=True)
    async def handle(messages: list[Message]) -> None:
        got.extend(m.body for m in messages)

    @app.on_started
    async def ready(app: App) -> None:
        order.append("started")
        assert app.health()["amqp"].ok  # connected, and the route consumes its queue
        await app.amqp.publish(b"hello", routing_key=queue, timeout=MUST_HAPPEN)

    async with open_app(app):
        order.append("block")
        await wait_until(lambda: got == [b"hello"])
    assert order == ["started", "block"]


async def test_a_failing_on_started_hook_stops_the_app_with_startup_error(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = broker.name("q")
    app = make_app()
    stopped: list[bool] = []

    @app.amqp.consume(queue, declare=True)
    async def handle(messages: list[Message]) -> None: ...

    @app.on_started
    async def broken(app: App) -> None:
        raise RuntimeError("cannot warm the cache")

    @app.on_shutdown
    async def bye(app: App) -> None:
        stopped.append(True)

    with trio.fail_after(MUST_HAPPEN), pytest.raises(StartupError, match="cannot warm the cache"):
        await app.serve(install_signal_handlers=False)
    assert stopped == [True], "stopped gracefully: shutdown hooks ran"
    assert not app.running


@pytest.mark.parametrize("what", ["password", "vhost"])
async def test_refused_credentials_or_vhost_are_a_startup_error(
    amqp_url: str, broker: Broker, make_app: Callable[..., App], what: str
) -> None:
    if what == "password":
        url = with_credentials(amqp_url, "guest", "not-the-password")
    else:
        url = with_vhost(amqp_url, "tw-no-such-vhost")
    app = make_app(amqp_url=url)

    @app.amqp.consume(broker.name("q"), declare=True)
    async def handle(messages: list[Message]) -> None: ...

    with trio.fail_after(MUST_HAPPEN), pytest.raises(StartupError) as caught:
        await app.serve(install_signal_handlers=False)
    text = str(caught.value)
    assert "not-the-password" not in text
    assert "'guest'" in text or "guest@" in text
    assert "127.0.0.1" in text
    assert ("tw-no-such-vhost" in text) if what == "vhost" else ("password" in text)


async def test_publish_times_out_while_the_broker_refuses_the_login(
    amqp_url: str, make_app: Callable[..., App]
) -> None:
    app = make_app(amqp_url=with_credentials(amqp_url, "guest", "not-the-password"), http_port=0)
    async with open_app(app):  # no routes: the backend starts on the first publish
        with trio.fail_after(MUST_HAPPEN), pytest.raises(TimeoutError) as caught:
            await app.amqp.publish(b"x", routing_key="anything", timeout=1.0)
    assert "within 1.0 s" in str(caught.value)
    assert "not-the-password" not in str(caught.value)


async def test_an_unreachable_broker_is_retried_until_it_appears(
    broker: Broker,
    broker_host_port: tuple[str, int],
    make_app: Callable[..., App],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = broker.name("q")
    got: list[bytes] = []
    async with open_tcp_proxy(*broker_host_port) as proxy:
        proxy.refuse_new = True
        app = make_app(amqp_url=proxy.amqp_url())

        @app.amqp.consume(queue, declare=True)
        async def handle(messages: list[Message]) -> None:
            got.extend(m.body for m in messages)

        async with open_app(app):  # starts: an unreachable broker is not a startup error
            await wait_until(lambda: caplog.text.count("reconnecting in") >= 3)
            assert not app.health()["amqp"].ok
            proxy.refuse_new = False
            await wait_until(lambda: app.health()["amqp"].ok)
            await broker.publish(queue, b"late")
            await wait_until(lambda: got == [b"late"])


async def test_registration_warns_about_shared_queues_and_capped_bulks(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    caplog.set_level(logging.WARNING, "trioworker.amqp")

    @app.amqp.consume("shared", bulk_size=500, prefetch=100)
    async def first(messages: list[Message]) -> None: ...

    assert "bulk_size=500 is capped by prefetch=100" in caplog.text
    assert "two routes" not in caplog.text

    @app.amqp.consume(["other", "shared"])
    async def second(messages: list[Message]) -> None: ...

    assert "queue 'shared' is consumed by two routes of this app" in caplog.text
    assert "'other'" not in caplog.text
