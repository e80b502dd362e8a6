"""AMQP metrics against the real broker: what the backend counts matches what happened.

Every number is checked against the handler's own record of its calls (and the broker's
queue depth), never against a constant that merely happens to come out.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import trio

from tests.support import rabbitmqctl
from tests.support.broker import MUST_HAPPEN, Broker, eventually
from tests.support.proxy import open_tcp_proxy
from trioworker import App, Message, open_app

from ._scrape import Samples, scrape, value

pytestmark = pytest.mark.broker


def counts(app: App, route: str, queue: str) -> dict[str, float]:
    s = scrape(app)
    labels = {"route": route, "queue": queue, "connection": "default"}
    return {
        kind: value(s, f"trioworker_amqp_messages_{kind}_total", **labels)
        for kind in ("received", "acked", "rejected", "requeued", "dropped")
    }


async def wait_metric(
    app: App, probe: Callable[[Samples], float], want: float | Callable[[float], bool]
) -> None:
    """Scrape until ``probe`` gives ``want`` (or a value ``want`` accepts)."""

    async def read() -> float:
        return probe(scrape(app))

    accept = want if callable(want) else (lambda v: v == want)
    await eventually(read, accept)


async def test_decisions_flushes_and_durations(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    """55 messages, bulks of 10: some rejected per message, one bulk raising once.

    Deliveries: 55 plus the raising bulk's messages again (requeued), which cannot make
    only full bulks, so at least one bulk is flushed by time.
    """
    total = 55
    queue = await broker.queue("metrics")
    await broker.publish(queue, *(json.dumps(i).encode() for i in range(total)))
    calls: list[tuple[list[int], str]] = []  # (bodies, "ok" | "error")
    raised = False

    async def handle(messages: list[Message]) -> None:
        nonlocal raised
        bodies = [m.json() for m in messages]
        await trio.sleep(0.01)
        if 25 in bodies and not raised:
            raised = True
            calls.append((bodies, "error"))
            raise RuntimeError("this bulk fails once")
        for m, body in zip(messages, bodies, strict=True):
            if body % 10 == 3:
                m.reject(requeue=False)
        calls.append((bodies, "ok"))

    app = make_app()
    app.amqp.consume(queue, bulk_size=10, flush_interval=0.3, name="metered")(handle)
    async with open_app(app):
        await wait_metric(
            app,
            lambda s: sum(
                value(
                    s,
                    f"trioworker_amqp_messages_{k}_total",
                    route="metered",
                    queue=queue,
                    connection="default",
                )
                for k in ("acked", "rejected")
            ),
            total,
        )
        await broker.wait_ready(queue, 0)
        got = counts(app, "metered", queue)
        s = scrape(app)

    failed = [bodies for bodies, outcome in calls if outcome == "error"]
    assert len(failed) == 1
    rejects = [b for b in range(total) if b % 10 == 3]
    assert got == {
        "received": total + len(failed[0]),
        "acked": total - len(rejects),
        "rejected": len(rejects),
        "requeued": len(failed[0]),
        "dropped": 0,
    }
    r = {"route": "metered", "connection": "default"}
    sizes = [len(bodies) for bodies, _ in calls]
    assert value(s, "trioworker_amqp_bulk_size_count", **r) == len(calls)
    assert value(s, "trioworker_amqp_bulk_size_sum", **r) == sum(sizes) == got["received"]
    assert value(s, "trioworker_amqp_bulk_size_bucket", le="8.0", **r) == sum(n <= 8 for n in sizes)
    by_size = value(s, "trioworker_amqp_bulks_flushed_total", reason="size", **r)
    by_time = value(s, "trioworker_amqp_bulks_flushed_total", reason="time", **r)
    assert by_size + by_time == len(calls)
    assert by_size == sum(n == 10 for n in sizes)  # a bulk flushed by time is not full
    assert by_time >= 1
    duration = "trioworker_amqp_handler_duration_seconds"
    assert value(s, f"{duration}_count", outcome="error", **r) == 1
    assert value(s, f"{duration}_count", outcome="ok", **r) == len(calls) - 1
    assert value(s, f"{duration}_sum", outcome="ok", **r) >= 0.01 * (len(calls) - 1)
    assert value(s, f"{duration}_count", outcome="timeout", **r) == 0
    assert value(s, "trioworker_amqp_handlers_running", **r) == 0


async def test_timeouts_running_handlers_and_buffered_messages(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    queue = await broker.queue("metrics-timeout")
    entered = trio.Event()
    release = trio.Event()
    calls = 0

    async def handle(messages: list[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await trio.sleep(30)  # past the route's timeout: requeued
        elif calls == 2:
            entered.set()
            await release.wait()

    app = make_app()
    app.amqp.consume(queue, timeout=0.3, name="slow")(handle)
    r = {"route": "slow", "connection": "default"}
    async with open_app(app):
        await broker.publish(queue, b"1", b"2", b"3")
        with trio.fail_after(MUST_HAPPEN):
            await entered.wait()
        # bulk_size=1 and concurrency=1: the other deliveries (3, and 1 again once its
        # requeue came back) wait in the batcher.
        await wait_metric(app, lambda s: value(s, "trioworker_amqp_messages_buffered", **r), 2)
        s = scrape(app)
        assert value(s, "trioworker_amqp_handlers_running", **r) == 1
        timeouts = value(s, "trioworker_amqp_handler_duration_seconds_count", outcome="timeout",
                         **r)  # fmt: skip
        assert timeouts == 1
        assert value(s, "trioworker_amqp_handler_duration_seconds_sum", outcome="timeout",
                     **r) >= 0.3  # fmt: skip
        assert counts(app, "slow", queue)["requeued"] == 1
        release.set()
        await wait_metric(app, lambda s: counts(app, "slow", queue)["acked"], 3)
        assert value(scrape(app), "trioworker_amqp_handlers_running", **r) == 0


async def test_counters_survive_a_reconnect_and_the_gauge_follows_the_connection(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    """The broker closes the app's connection: reconnects goes up, the state gauge goes
    to 0 and back to 1, and the route's counters go on from where they were."""
    queue = await broker.queue("metrics-reconnect")
    handled: list[bytes] = []

    async def handle(messages: list[Message]) -> None:
        handled.extend(m.body for m in messages)

    app = make_app()
    app.amqp.consume(queue, name="steady")(handle)
    up_seen: list[float] = []

    def up(s: Samples) -> float:
        return value(s, "trioworker_amqp_connection_up", connection="default")

    async def watch_gauge(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            state = up(scrape(app))
            if not up_seen or up_seen[-1] != state:
                up_seen.append(state)
            await trio.sleep(0.005)

    async with open_app(app), trio.open_nursery() as nursery:
        await broker.publish(queue, *(b"before-%d" % i for i in range(5)))
        await wait_metric(app, lambda s: counts(app, "steady", queue)["acked"], 5)
        s = scrape(app)
        assert value(s, "trioworker_amqp_reconnects_total", connection="default") == 0
        assert up(s) == 1

        await nursery.start(watch_gauge)
        closed = await rabbitmqctl.close_connection_by_name_async(f"{app.name}:default")
        assert closed == 1
        await wait_metric(
            app,
            lambda s: value(s, "trioworker_amqp_reconnects_total", connection="default"),
            lambda n: n >= 1,
        )
        await wait_metric(app, up, 1)
        await broker.publish(queue, *(b"after-%d" % i for i in range(5)))
        await wait_metric(app, lambda s: counts(app, "steady", queue)["acked"], 10)
        nursery.cancel_scope.cancel()

    assert up_seen[:3] == [1, 0, 1], up_seen
    assert sorted(handled) == sorted([b"before-%d" % i for i in range(5)]
                                     + [b"after-%d" % i for i in range(5)])  # fmt: skip
    assert counts(app, "steady", queue)["received"] == 10
    # The bulk counters (a new batcher is made for the new connection) carried over too.
    s = scrape(app)
    r = {"route": "steady", "connection": "default"}
    assert value(s, "trioworker_amqp_bulks_flushed_total", reason="size", **r) == len(handled)
    assert value(s, "trioworker_amqp_handler_duration_seconds_count", outcome="ok", **r) == len(
        handled
    )


async def test_the_gauge_stays_down_while_the_broker_is_unreachable(
    broker: Broker, make_app: Callable[..., App], broker_host_port: tuple[str, int]
) -> None:
    """Through a TCP proxy that refuses connections: every refused attempt counts as a
    reconnect and the gauge stays 0 until the broker is reachable again. The handler call
    running when the connection died is cancelled, and its decision dropped; the delivery
    still buffered is no longer counted as buffered. The broker redelivers both."""
    queue = await broker.queue("metrics-down")
    entered = trio.Event()
    calls = 0

    async def handle(messages: list[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await trio.sleep_forever()

    async with open_tcp_proxy(*broker_host_port) as proxy:
        app = make_app(amqp_url=proxy.amqp_url())
        app.amqp.consume(queue, name="r")(handle)

        def reconnects(s: Samples) -> float:
            return value(s, "trioworker_amqp_reconnects_total", connection="default")

        def up(s: Samples) -> float:
            return value(s, "trioworker_amqp_connection_up", connection="default")

        async with open_app(app):
            assert up(scrape(app)) == 1
            await broker.publish(queue, b"x", b"y")
            with trio.fail_after(MUST_HAPPEN):
                await entered.wait()
            r = {"route": "r", "connection": "default"}
            await wait_metric(app, lambda s: value(s, "trioworker_amqp_messages_buffered", **r), 1)
            proxy.refuse_new = True
            assert await proxy.cut() == 1
            await wait_metric(app, reconnects, lambda n: n >= 3)
            s = scrape(app)
            assert up(s) == 0
            assert value(s, "trioworker_amqp_messages_buffered", **r) == 0
            cancelled = value(s, "trioworker_amqp_handler_duration_seconds_count",
                              outcome="cancelled", **r)  # fmt: skip
            assert cancelled == 1
            assert counts(app, "r", queue) == {
                "received": 2, "acked": 0, "rejected": 0, "requeued": 0, "dropped": 1
            }  # fmt: skip
            proxy.refuse_new = False
            await wait_metric(app, up, 1)
            # Both redelivered on the new connection, handled, acknowledged.
            await wait_metric(app, lambda s: counts(app, "r", queue)["acked"], 2)
            assert counts(app, "r", queue) == {
                "received": 4, "acked": 2, "rejected": 0, "requeued": 0, "dropped": 1
            }  # fmt: skip


async def test_messages_returned_at_shutdown_count_as_requeued(
    broker: Broker, make_app: Callable[..., App]
) -> None:
    """A bulk still filling up when the app stops: its messages go back to the queue."""
    queue = await broker.queue("metrics-shutdown")
    handled: list[bytes] = []

    async def handle(messages: list[Message]) -> None:
        handled.extend(m.body for m in messages)

    app = make_app()
    app.amqp.consume(queue, bulk_size=10, flush_interval=60, name="patient")(handle)
    r = {"route": "patient", "connection": "default"}
    async with open_app(app):
        await broker.publish(queue, b"1", b"2", b"3")
        await wait_metric(app, lambda s: value(s, "trioworker_amqp_messages_buffered", **r), 3)
        assert counts(app, "patient", queue)["received"] == 3
    assert handled == []
    assert counts(app, "patient", queue) == {
        "received": 3, "acked": 0, "rejected": 0, "requeued": 3, "dropped": 0
    }  # fmt: skip
    assert value(scrape(app), "trioworker_amqp_messages_buffered", **r) == 0
    assert value(scrape(app), "trioworker_amqp_connection_up", connection="default") == 0
    await broker.wait_ready(queue, 3)
