"""An RPC call in flight when the caller's node dies fails fast; the next call works.

The server (an ``@app.amqp.rpc`` route) runs on node 3 alone, the caller on nodes 1 and 2.
A call is waiting for its reply — the handler holds it — when node 1, where the caller's
reply channel lives (direct reply-to), is ``kill -9``-ed: the reply can never come, so the
call must fail at once with an error that says so, not wait for its timeout. It is not
retried (a call may not be idempotent). The caller fails over to node 2 and the next call
gets its reply.
"""

from __future__ import annotations

import secrets

import pytest
import trio

from tests.support.cluster import Cluster
from trioworker import App, Message, open_app
from trioworker.amqp import AMQPConnectionError

from ._helpers import delete_queues

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: The calls' timeout: far longer than failing fast may take.
CALL_TIMEOUT = 120.0


async def test_a_call_in_flight_when_its_node_dies_fails_fast_and_the_next_works(
    healthy_cluster: Cluster,
) -> None:
    cluster = healthy_cluster
    n1, n2, n3 = cluster.nodes
    queue = f"tw-cluster-rpc-{secrets.token_hex(4)}"
    server = App(amqp_url=[n3.amqp_url], name="tw-cluster-rpc-server", grace_period=5)
    caller = App(amqp_url=[n1.amqp_url, n2.amqp_url], name="tw-cluster-rpc-caller")
    received = trio.Event()
    release = trio.Event()

    handled = trio.Event()

    @server.amqp.rpc(queue)
    async def echo(message: Message) -> str:
        text = message.json()
        if text == "held":
            received.set()
            await release.wait()
            handled.set()
        return f"echo {text}"

    outcome: list[BaseException | str] = []
    ended = trio.Event()

    async def held_call() -> None:
        try:
            outcome.append(await caller.amqp.call(queue, "held", timeout=CALL_TIMEOUT))
        except Exception as exc:
            outcome.append(exc)
        ended.set()

    try:
        async with open_app(server), open_app(caller), trio.open_nursery() as nursery:
            assert await caller.amqp.call(queue, "before", timeout=CALL_TIMEOUT) == "echo before"
            nursery.start_soon(held_call)
            await received.wait()
            await trio.to_thread.run_sync(cluster.kill, n1)
            with trio.fail_after(CALL_TIMEOUT / 2):  # fast: long before the call's timeout
                await ended.wait()
            (error,) = outcome
            assert isinstance(error, AMQPConnectionError), repr(error)
            assert "reply" in str(error) and "may have been handled" in str(error), str(error)
            assert await caller.amqp.call(queue, "after", timeout=CALL_TIMEOUT) == "echo after"
            # The held call's reply goes to a reply-to address on the dead node: given up
            # (RabbitMQ closes the server's publishing connection for it), not retried for
            # ever, and the server keeps answering.
            release.set()
            await handled.wait()
            assert await caller.amqp.call(queue, "last", timeout=CALL_TIMEOUT) == "echo last"
    finally:
        await delete_queues(cluster, queue)
