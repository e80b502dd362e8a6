"""/health tells the truth about the broker: 503 naming the amqp backend while it is down."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import trio

from tests.support.proxy import open_tcp_proxy
from trioworker import App

from .conftest import MUST_HAPPEN, closed_port, serving

pytestmark = pytest.mark.broker


async def _wait_for_status(client: httpx.AsyncClient, status: int) -> httpx.Response:
    with trio.fail_after(MUST_HAPPEN):
        while True:
            r = await client.get("/health")
            if r.status_code == status:
                return r
            await trio.sleep(0.05)


async def test_health_is_503_when_the_broker_cannot_be_reached(
    make_app: Callable[..., App],
) -> None:
    app = make_app(amqp_url=f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F")
    app.amqp.enable()  # a worker that publishes: it connects at startup
    async with serving(app) as client:
        r = await client.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["backends"]["amqp"]["ok"] is False
    assert "down" in body["backends"]["amqp"]["detail"]
    assert body["backends"]["http"]["ok"] is True


async def test_health_follows_a_broker_connection_cut_and_reconnect(
    make_app: Callable[..., App], broker_host_port: tuple[str, int]
) -> None:
    async with open_tcp_proxy(*broker_host_port) as proxy:
        app = make_app(amqp_url=proxy.amqp_url())
        app.amqp.enable()
        async with serving(app) as client:
            await _wait_for_status(client, 200)
            proxy.refuse_new = True
            await proxy.cut()
            down = await _wait_for_status(client, 503)
            proxy.refuse_new = False
            up = await _wait_for_status(client, 200)
    assert down.json()["backends"]["amqp"]["ok"] is False
    assert "connection 'default' is down" in down.json()["backends"]["amqp"]["detail"]
    assert up.json()["backends"]["amqp"]["ok"] is True
