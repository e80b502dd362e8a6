"""Connection loss under load: the worker reconnects, re-consumes and loses nothing.

20,000 messages wait in a queue; a bulk route (100 per bulk) works through them while the
app's connection is killed twice — by the broker (``rabbitmqctl close_connection`` of the
app's named connection, or ``close_all_connections``) or by a TCP proxy between app and
broker. Promised (docs/amqp.md): reconnect with backoff, re-consume, every message handled at
least once, none left in the queue, and decisions for deliveries of a dead channel dropped,
never sent on the new one (RabbitMQ would close that channel with 406 PRECONDITION_FAILED
"unknown delivery tag" — or worse, silently ack another message that has the same tag).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
import trio

from tests.conftest import broker_address
from tests.support import rabbitmqctl
from tests.support.proxy import TCPProxy, open_tcp_proxy
from trioworker import App, Message, open_app
from trioworker.backends.amqp._supervisor import Supervisor

from ._helpers import (
    channel_errors,
    channels_closed_by_broker,
    declare,
    decode,
    fill,
    message_count,
    wait_for,
    wait_for_counts,
)

pytestmark = pytest.mark.broker

TOTAL = 20_000
BULK_SIZE = 100
#: Handler time per bulk: ~2,000 msg/s, so the run lasts long enough for two cuts.
PACE = 0.05
CUT_AT = (5_000, 11_000)

Cut = Callable[[], Awaitable[None]]


class Recorder:
    """What the handler saw: for each id, (connection generation, redelivered) per handling.

    The generation is the supervisor's ``reconnects`` counter when the handler finished:
    it only grows once the old connection (and every handler call on it) is gone.
    """

    def __init__(self) -> None:
        self.handlings: dict[int, list[tuple[int, bool]]] = defaultdict(list)
        self.supervisor: Supervisor | None = None
        self._gate = trio.Event()
        self._gate.set()

    def pause(self) -> None:
        """Hold handler calls (they stay in flight) until :meth:`resume`: a cut that takes
        long to land (``rabbitmqctl`` on a busy machine) still lands under load."""
        self._gate = trio.Event()

    def resume(self) -> None:
        self._gate.set()

    @property
    def distinct(self) -> int:
        return len(self.handlings)

    async def handle(self, messages: list[Message]) -> None:
        await trio.sleep(PACE)
        await self._gate.wait()
        assert self.supervisor is not None
        generation = self.supervisor.reconnects
        for message in messages:
            self.handlings[decode(message.body)].append((generation, message.redelivered))


async def run_reconnect_under_load(
    url: str, queue: str, app_name: str, vhost: str, cut: Cut, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioworker")
    await declare(url, queue)
    await fill(url, queue, range(TOTAL))

    recorder = Recorder()
    app = App(url, name=app_name, grace_period=5)
    app.amqp.consume(queue, bulk_size=BULK_SIZE, flush_interval=0.2)(recorder.handle)
    supervisor = recorder.supervisor = next(iter(app.amqp.supervisors))
    handled_when_reconnected: list[int] = []
    try:
        await _drive(queue, vhost, app, recorder, cut, handled_when_reconnected)
    except Exception:
        # A run that stalls or loses messages because decisions went to the wrong channel
        # says so first.
        errors = channel_errors(caplog.records)
        assert not errors, f"decisions sent on a channel that did not deliver them: {errors[:5]}"
        raise

    # ---- every message handled at least once, the queue is empty ---------------------
    assert set(recorder.handlings) == set(range(TOTAL))
    assert await message_count(url, queue) == 0
    assert supervisor.reconnects >= 2
    assert len(handled_when_reconnected) >= 2
    assert all(n < TOTAL for n in handled_when_reconnected[:2]), (
        f"a cut landed after the work was done ({handled_when_reconnected}): not under load"
    )

    # ---- duplicates only across a cut ----------------------------------------------
    # A message is handled again only if its first handling was on a connection that then
    # died (its ack lost with it); the later handling is on a newer connection and the
    # broker marks it redelivered.
    duplicated = {i: h for i, h in recorder.handlings.items() if len(h) > 1}
    for message_id, handlings in duplicated.items():
        generations = [g for g, _ in handlings]
        assert generations == sorted(set(generations)), (
            f"id {message_id} handled twice on the same connection: {handlings}"
        )
        assert all(redelivered for _, redelivered in handlings[1:]), (
            f"id {message_id} handled again without the redelivered flag: {handlings}"
        )
    first_time_redelivered = sum(1 for h in recorder.handlings.values() if h[0][1])
    print(
        f"reconnects={supervisor.reconnects} handled-at-reconnect={handled_when_reconnected} "
        f"duplicates={len(duplicated)} first-seen-redelivered={first_time_redelivered}"
    )

    # ---- no decision went to a channel that did not deliver the message ---------------
    records = caplog.records
    assert not channel_errors(records), channel_errors(records)
    assert not channels_closed_by_broker(records), channels_closed_by_broker(records)
    lost = [r for r in records if "lost or refused" in r.getMessage()]
    assert len(lost) >= 2, "the log shows fewer than two reconnects (is caplog capturing?)"


async def _drive(
    queue: str,
    vhost: str,
    app: App,
    recorder: Recorder,
    cut: Cut,
    handled_when_reconnected: list[int],
) -> None:
    supervisor = recorder.supervisor
    assert supervisor is not None

    async def watch_reconnects() -> None:
        seen = 0
        while True:
            if supervisor.reconnects > seen:
                seen = supervisor.reconnects
                handled_when_reconnected.append(recorder.distinct)
            await trio.sleep(0.005)

    with trio.fail_after(120):
        async with open_app(app), trio.open_nursery() as watchers:
            watchers.start_soon(watch_reconnects)
            for number, threshold in enumerate(CUT_AT, 1):
                await wait_for(
                    lambda t=threshold: recorder.distinct >= t,
                    f"{threshold} messages handled",
                )
                # After the first cut, wait until the app is back on a new connection.
                await wait_for(
                    lambda n=number: (
                        supervisor.reconnects >= n - 1
                        and supervisor.connection is not None
                        and supervisor.connected.is_set()
                    ),
                    f"connection {number} is up",
                )
                recorder.pause()
                await cut()
                await wait_for(
                    lambda n=number: supervisor.reconnects >= n,
                    f"the app noticed cut {number}",
                )
                recorder.resume()
            await wait_for(lambda: recorder.distinct >= TOTAL, "every message handled")
            # Still running: every delivery must have been acked, so nothing is left
            # unacknowledged either (a connection close would requeue what was not).
            await wait_for_counts(
                queue,
                vhost,
                lambda c: c.ready == 0 and c.unacked == 0,
                "queue empty with nothing unacked while the app still runs",
            )
            watchers.cancel_scope.cancel()


async def test_reconnect_under_load_connection_closed_by_broker(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``rabbitmqctl close_connection`` of the app's own connection, twice during the run."""
    connection_name = f"{app_name}:default"

    async def cut() -> None:
        closed = await rabbitmqctl.close_connection_by_name_async(
            connection_name, "fault test: connection closed under load"
        )
        assert closed == 1

    await run_reconnect_under_load(amqp_url, queues.new(), app_name, amqp_vhost, cut, caplog)


async def test_reconnect_under_load_tcp_cut(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The network dies under the app: a TCP reset, then a plain FIN, via the proxy."""
    async with open_tcp_proxy(*broker_address(amqp_url)) as proxy:
        resets = iter([True, False])

        async def cut() -> None:
            assert await proxy.cut(reset=next(resets)) == 1

        url = proxy_url(proxy, amqp_url)
        await run_reconnect_under_load(url, queues.new(), app_name, amqp_vhost, cut, caplog)


@pytest.mark.slow
async def test_reconnect_under_load_close_all_connections(
    amqp_url: str, amqp_vhost: str, queues, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``rabbitmqctl close_all_connections`` (the design's own fault): closes EVERY
    connection on the broker, other suites' too — hence ``slow``, deselect with -m."""

    async def cut() -> None:
        await rabbitmqctl.close_all_connections_async("fault test: close_all_connections")

    await run_reconnect_under_load(amqp_url, queues.new(), app_name, amqp_vhost, cut, caplog)


def proxy_url(proxy: TCPProxy, amqp_url: str) -> str:
    """``amqp_url`` with the proxy's address (same credentials and vhost)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(amqp_url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}{proxy.host}:{proxy.port}"))
