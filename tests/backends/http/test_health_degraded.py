"""/health says "degraded" (still 200) while a handler call runs too long, naming the route.

Too long: past the route's ``timeout`` if it has one, else past the app's
``slow_handler_threshold``. Once the call returns, /health is "ok" again. A backend that is
down still makes it 503, slow calls or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from tests.support.broker import Broker
from trioworker import App, Message

from .conftest import MUST_HAPPEN, serving


async def wait_for_status(client: httpx.AsyncClient, status: str) -> dict[str, Any]:
    with trio.fail_after(MUST_HAPPEN):
        while True:
            r = await client.get("/health")
            body: dict[str, Any] = r.json()
            if body["status"] == status:
                assert r.status_code == (200 if status in ("ok", "degraded") else 503)
                return body
            await trio.sleep(0.05)


@pytest.mark.broker
async def test_a_slow_amqp_handler_call_degrades_health_until_it_returns(
    broker: Broker, make_app: Callable[..., App], amqp_url: str
) -> None:
    queue = await broker.queue("slow")
    app = make_app(amqp_url=amqp_url, slow_handler_threshold=0.3)
    release = trio.Event()

    @app.amqp.consume([queue], name="slow-route")
    async def slow(messages: list[Message]) -> None:
        await release.wait()

    async with serving(app) as client:
        assert (await wait_for_status(client, "ok"))["backends"]["amqp"]["status"] == "ok"
        await broker.publish(queue, b"{}")
        degraded = await wait_for_status(client, "degraded")
        release.set()
        ok = await wait_for_status(client, "ok")
    amqp = degraded["backends"]["amqp"]
    assert amqp["ok"] is True and amqp["status"] == "degraded"
    assert "route 'slow-route': a handler call has been running for" in amqp["detail"]
    assert "(past 0.3 s)" in amqp["detail"]
    assert degraded["backends"]["http"]["status"] == "ok"
    assert ok["backends"]["amqp"] == {"ok": True, "status": "ok", "detail": ""}


@pytest.mark.broker
async def test_a_call_past_its_route_timeout_degrades_health(
    broker: Broker, make_app: Callable[..., App], amqp_url: str
) -> None:
    # A call past its timeout ignores cancellation (here: a shielded wait); the app-wide
    # threshold (60 s by default) does not apply to a route with a timeout.
    queue = await broker.queue("shielded")
    app = make_app(amqp_url=amqp_url)
    release = trio.Event()

    @app.amqp.consume([queue], timeout=0.3, name="stubborn")
    async def stubborn(messages: list[Message]) -> None:
        with trio.CancelScope(shield=True):
            await release.wait()

    async with serving(app) as client:
        await broker.publish(queue, b"{}")
        degraded = await wait_for_status(client, "degraded")
        release.set()
        await wait_for_status(client, "ok")
    detail = degraded["backends"]["amqp"]["detail"]
    assert "route 'stubborn'" in detail and "(past its 0.3 s timeout)" in detail


async def _health_during_a_long_timer_run(app: App) -> tuple[httpx.Response, dict[str, Any]]:
    """/health 0.4 s into a timer run, and once the run has returned."""
    release = trio.Event()
    started = trio.Event()

    @app.every(3600, run_at_startup=True, name="report")
    async def report(app: App) -> None:
        started.set()
        await release.wait()

    async with serving(app) as client:
        await started.wait()
        await trio.sleep(0.4)  # past the threshold
        during = await client.get("/health")
        release.set()
        after = await wait_for_status(client, "ok")
    return during, after


async def test_a_long_timer_run_degrades_health_and_off_means_never(
    make_app: Callable[..., App],
) -> None:
    during, after = await _health_during_a_long_timer_run(make_app(slow_handler_threshold=0.2))
    assert during.status_code == 200
    assert during.json()["status"] == "degraded"
    timers = during.json()["backends"]["timers"]
    assert timers["status"] == "degraded"
    assert "route 'report': a handler call has been running for" in timers["detail"]
    assert after["backends"]["timers"]["status"] == "ok"

    during, _ = await _health_during_a_long_timer_run(make_app(slow_handler_threshold=0))
    assert during.status_code == 200
    assert during.json()["backends"]["timers"] == {"ok": True, "status": "ok", "detail": ""}


async def test_a_backend_down_beats_degraded(make_app: Callable[..., App]) -> None:
    app = make_app(slow_handler_threshold=0.1)  # its broker URL points nowhere
    app.amqp.enable()
    release = trio.Event()

    @app.every(3600, run_at_startup=True)
    async def report(app: App) -> None:
        await release.wait()

    async with serving(app) as client:
        with trio.fail_after(MUST_HAPPEN):
            while True:
                r = await client.get("/health")
                if r.json()["backends"]["timers"]["status"] == "degraded":
                    break
                await trio.sleep(0.05)
        release.set()
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert r.json()["backends"]["amqp"]["status"] == "unavailable"


def test_the_slow_handler_threshold_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIOWORKER_SLOW_HANDLER_THRESHOLD", "5")
    assert App(name="env").slow_handler_threshold == 5.0
    assert App(name="env", slow_handler_threshold=1).slow_handler_threshold == 1.0
    monkeypatch.setenv("TRIOWORKER_SLOW_HANDLER_THRESHOLD", "0")
    assert App(name="env").slow_handler_threshold is None
    monkeypatch.setenv("TRIOWORKER_SLOW_HANDLER_THRESHOLD", "-3")
    with pytest.raises(ValueError, match="TRIOWORKER_SLOW_HANDLER_THRESHOLD"):
        App(name="env")
    monkeypatch.delenv("TRIOWORKER_SLOW_HANDLER_THRESHOLD")
    assert App(name="env").slow_handler_threshold == 60.0
