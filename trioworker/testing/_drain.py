"""``client.drain()``: wait until the app has nothing left to do.

Idle means, all at once: every AMQP route holds no delivery (buffered, in a bulk filling
up, in a handler call, or handled with its decision not yet sent — a retry copy waiting for
its confirm included), no timer run is under way, every SSE route has read what its feed
was sent and handled it, and the broker has nothing to deliver.

The two brokers are asked differently:

* **In memory** everything runs in this trio program, so "nothing can happen any more" is
  exact: every task blocked (``trio.testing.wait_all_tasks_blocked``) and
  ``MemoryBroker.is_idle()``. What remains can only be *time*: a bulk waiting for its
  ``flush_interval`` is handed over at once (nothing else can join it: no task can run),
  and a pending message TTL — a retry's delay queue, a message ``expiration`` — is skipped
  with ``MemoryBroker.fast_forward()``. A 60 s retry delay costs no wall time.
* **RabbitMQ** runs elsewhere, so drain polls: the app idle and the queues it consumes
  (and their retry delay queues) empty, three times in a row 50 ms apart with nothing
  received meanwhile. Delays are waited for for real, so such tests use short ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio
import trio.testing

from ..backends.amqp._retrying import delay_queue_name
from ..backends.amqp._routes import DEFAULT_CONNECTION

if TYPE_CHECKING:
    from .. import App
    from ._sse import SSEFeeds

__all__ = [
    "DrainTimeout",
    "app_activity",
    "drain_memory",
    "drain_polling",
    "flush_bulks",
    "watched_queues",
]

#: Between two looks at a RabbitMQ-backed app, and how many idle looks in a row count.
POLL_INTERVAL = 0.05
IDLE_LOOKS = 3
#: How long a busy in-memory app gets before drain looks again (time passes: a route
#: backing off after failures, a handler sleeping, a sync handler in its thread).
MEMORY_RETRY = 0.005


class DrainTimeout(TimeoutError):
    """``drain()`` gave up: the app was still busy (the message says with what)."""


class _MemoryBroker(Protocol):
    def is_idle(self) -> bool: ...

    def next_expiry(self) -> float | None: ...

    def fast_forward(self, seconds: float) -> None: ...

    def now(self) -> float: ...


def app_activity(app: App, feeds: SSEFeeds | None = None) -> list[str]:
    """What the app is busy with, one line each; empty when it is idle."""
    busy: list[str] = []
    for sup in app.amqp.supervisors:
        if sup.routes and not sup.up:
            busy.append(f"AMQP connection {sup.name!r} is down (reconnecting)")
        for run in sup.runs():
            held = {what: n for what, n in run.in_flight().items() if n}
            if held:
                counts = ", ".join(f"{n} {what}" for what, n in held.items())
                busy.append(f"route {run.route.name!r}: {counts}")
    for timer in app.timers.timers:
        if timer.running:
            busy.append(f"timer {timer.name!r}: {timer.running} run(s) under way")
    for stream_run in app.sse.runs:
        batcher = stream_run.batcher
        if not batcher.idle:
            busy.append(
                f"SSE stream {stream_run.stream.name!r}: {batcher.waiting} waiting, "
                f"{batcher.running} running"
            )
    if feeds is not None:
        for feed in feeds.feeds:
            if feed.pending:
                busy.append(f"SSE feed {feed.url!r}: {feed.pending} chunk(s) not read yet")
    return busy


def received(app: App) -> int:
    """Deliveries and events the app has taken so far (progress between two looks)."""
    total = sum(c.received for r in app.amqp.routes for c in r.stats.queues.values())
    return total + sum(run.stats.received for run in app.sse.runs)


def watched_queues(app: App) -> list[str]:
    """The queues a RabbitMQ drain waits to see empty: those the app's routes consume on
    its default connection and vhost (the client's), and their retry delay queues."""
    names: list[str] = []
    for route in app.amqp.routes:
        if route.vhost is not None or route.connection != DEFAULT_CONNECTION:
            continue
        names.extend(route.queues)
        if route.retry is not None:
            for queue in route.queues:
                names += [delay_queue_name(queue, d) for d in route.retry.distinct_delays]
    return list(dict.fromkeys(names))


def flush_bulks(app: App) -> bool:
    """Hand every bulk filling up to its handler now (AMQP routes and SSE streams); return
    whether there was one."""
    flushed = [run.flush() for sup in app.amqp.supervisors for run in sup.runs()]
    flushed += [stream_run.batcher.flush() for stream_run in app.sse.runs]
    return any(flushed)


def _timeout(timeout: float | None, what: list[str]) -> DrainTimeout:
    detail = "; ".join(what) or "the broker still had messages to deliver"
    if _frozen_clock():
        detail += (
            " (trio's MockClock stands still: what waits for time needs client.advance(), "
            "or mock_clock.autojump_threshold = 0)"
        )
    return DrainTimeout(f"drain(): still busy after {timeout} s: {detail}")


def _frozen_clock() -> bool:
    clock = trio.lowlevel.current_clock()
    return (
        isinstance(clock, trio.testing.MockClock)
        and clock.rate == 0
        and clock.autojump_threshold == math.inf
    )


async def _pause(seconds: float) -> None:
    """Let ``seconds`` pass before looking again — real ones when trio's clock is a
    MockClock that stands still (a sleep on it would never end)."""
    if _frozen_clock():
        await trio.to_thread.run_sync(time.sleep, seconds)
    else:
        await trio.sleep(seconds)


def _deadline(timeout: float | None) -> float:
    """Drain timeouts are real seconds, whatever trio's clock: on a MockClock that jumps,
    virtual time is free, and on one that stands still it never passes."""
    return time.monotonic() + (math.inf if timeout is None else timeout)


async def drain_memory(
    app: App,
    broker: _MemoryBroker,
    feeds: SSEFeeds | None,
    *,
    timeout: float | None,  # noqa: ASYNC109 - real seconds, reported in DrainTimeout
    skip_ttl: bool = True,
) -> None:
    """Drain an app running on the memory broker (see the module docstring)."""
    deadline = _deadline(timeout)
    while True:
        await trio.testing.wait_all_tasks_blocked()
        busy = app_activity(app, feeds)
        broker_idle = broker.is_idle()
        if not busy and broker_idle:
            expiry = broker.next_expiry() if skip_ttl else None
            if expiry is None:
                return
            broker.fast_forward(max(0.0, expiry - broker.now()))
            continue
        # Nothing can run: a bulk filling up waits for time only. Hand it over at once.
        if flush_bulks(app):
            continue
        if time.monotonic() >= deadline:
            raise _timeout(timeout, busy or ["the memory broker has deliveries in flight"])
        # Busy, and every task waits: for time (a route backing off, a handler sleeping)
        # or for a thread (a sync handler).
        await _pause(MEMORY_RETRY)


async def drain_polling(
    app: App,
    broker_activity: Callable[[], Awaitable[list[str]]],
    feeds: SSEFeeds | None,
    *,
    timeout: float | None,  # noqa: ASYNC109 - real seconds, reported in DrainTimeout
) -> None:
    """Drain an app running on a real broker: poll until it looks idle several times in a
    row with nothing received in between (see the module docstring)."""
    deadline = _deadline(timeout)
    looks = 0
    seen = -1
    while True:
        busy = app_activity(app, feeds)
        if not busy:
            busy = await broker_activity()
        now_seen = received(app)
        looks = looks + 1 if not busy and now_seen == seen else 0
        seen = now_seen
        if looks >= IDLE_LOOKS:
            return
        if time.monotonic() >= deadline:
            raise _timeout(timeout, busy)
        await _pause(POLL_INTERVAL)
