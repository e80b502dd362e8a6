"""A publish in flight when the connection dies is published again (issue 11, "Also").

docs/amqp.md promised that ``app.amqp.publish`` "waits for the reconnect", yet one
publish in flight raised ``ConnectionLostError``. The contract now: a publish not confirmed
when the connection dies is published again once it is back (at least once: duplicates are
possible, for those republished only), within the publish's ``timeout``.

2,000 confirmed publishes from 20 concurrent tasks go through a TCP proxy that cuts the
connection mid-way. Every publish that returned must be in the queue; none may raise here
(the timeout is generous), and the ids of any that did are reported; the duplicates are at
most the publishes sent again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import trio

from tests.support.broker import Broker
from tests.support.proxy import open_tcp_proxy
from trioworker import App, open_app

from ._helpers import MUST_HAPPEN, decode, drain, encode, wait_for

pytestmark = pytest.mark.broker

TASKS = 20
PER_TASK = 100
CUT_AFTER = 600


async def test_a_cut_mid_publish_loses_no_publish_and_raises_none(
    make_app: Callable[..., App],
    broker: Broker,
    broker_host_port: tuple[str, int],
    amqp_url: str,
) -> None:
    queue = await broker.queue()
    returned: list[int] = []
    raised: dict[int, BaseException] = {}

    async with open_tcp_proxy(*broker_host_port) as proxy:
        app = make_app(amqp_url=proxy.amqp_url())

        async def publisher(first: int) -> None:
            for message_id in range(first, first + PER_TASK):
                try:
                    await app.amqp.publish(
                        encode(message_id), routing_key=queue, timeout=MUST_HAPPEN
                    )
                except Exception as exc:  # what the caller sees; reported below
                    raised[message_id] = exc
                else:
                    returned.append(message_id)

        async with open_app(app), trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(publisher, task * PER_TASK)
            await wait_for(lambda: len(returned) >= CUT_AFTER, "publishes confirmed")
            cut = await proxy.cut()
            assert cut, "the proxy had no connection to cut"
        publisher_state = next(iter(app.amqp.supervisors)).publisher

    assert not raised, (
        f"{len(raised)} publishes raised across the reconnect (ids "
        f"{sorted(raised)[:20]}...): {next(iter(raised.values()))!r}"
    )
    in_queue = Counter(decode(body) for body in [encode(i) for i in await drain(amqp_url, queue)])
    missing = set(returned) - set(in_queue)
    assert not missing, f"confirmed publishes lost: {sorted(missing)[:20]}"
    assert len(returned) == TASKS * PER_TASK
    duplicates = sum(n - 1 for n in in_queue.values())
    assert publisher_state.republished > 0, "no publish was in flight at the cut"
    assert duplicates <= publisher_state.republished
