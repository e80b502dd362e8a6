"""Publishing with confirms while the node the publisher is connected to is killed.

An app given the cluster's URLs publishes 3,000 persistent messages from 20 concurrent
tasks into a quorum queue led by the node its publishing connection is on; mid-run that
node is ``kill -9``-ed. A confirmed publish is replicated on a majority, so every publish
that returned must be in the queue; the ones in flight at the kill are published again on
the next node (at least once), so none may raise, and the duplicates are at most those
republished. Afterwards the app reports the node it publishes on now.
"""

from __future__ import annotations

import secrets
from collections import Counter

import pytest
import trio

from tests.metrics._scrape import scrape, value
from tests.support.cluster import Cluster
from trioworker import App, Queue, open_app

from ._helpers import MUST_HAPPEN, declare, delete_queues, drain, port_of, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TASKS = 20
PER_TASK = 150
KILL_AFTER = 1_000


async def test_killing_the_publishers_node_loses_no_confirmed_publish(
    healthy_cluster: Cluster,
) -> None:
    cluster = healthy_cluster
    victim = cluster.nodes[1]
    name = f"tw-cluster-published-{secrets.token_hex(4)}"
    # Led by the victim: the kill costs the publisher its connection and the queue its
    # leader at once.
    await declare(victim.amqp_url, name, Queue(name, kind="quorum").declare_arguments())
    urls = cluster.urls
    app = App(amqp_url=[urls[1], urls[2], urls[0]], name="tw-cluster-publisher")
    returned: list[int] = []
    raised: dict[int, BaseException] = {}

    async def publisher(first: int) -> None:
        for message_id in range(first, first + PER_TASK):
            try:
                await app.amqp.publish(str(message_id), routing_key=name, timeout=MUST_HAPPEN)
            except Exception as exc:  # what the caller sees; reported below
                raised[message_id] = exc
            else:
                returned.append(message_id)

    try:
        async with open_app(app), trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(publisher, task * PER_TASK)
            await wait_for(lambda: len(returned) >= KILL_AFTER, "publishes confirmed")
            supervisor = next(iter(app.amqp.supervisors))
            assert supervisor.publishing.node is not None
            assert port_of(supervisor.publishing.node) == victim.port
            await trio.to_thread.run_sync(cluster.kill, victim)
            await wait_for(lambda: len(returned) + len(raised) == TASKS * PER_TASK, "all done")
            # The publisher says where it is now (metrics, health).
            now = supervisor.publishing.node
            assert now is not None and port_of(now) == cluster.nodes[2].port
            samples = scrape(app)
            labels = {"connection": "default:publish", "node": now}
            assert value(samples, "trioworker_amqp_connected_node", **labels) == 1
            gone = {"connection": "default:publish", "node": f"127.0.0.1:{victim.port}"}
            assert value(samples, "trioworker_amqp_connected_node", **gone) == 0
        republished = supervisor.publisher.republished
        renacked = supervisor.publisher.renacked
        assert not raised, (
            f"{len(raised)} publishes raised across the failover (ids {sorted(raised)[:20]}"
            f"...): {next(iter(raised.values()))!r}"
        )
        in_queue = Counter(await drain(cluster, name))
    finally:
        await delete_queues(cluster, name)

    missing = set(returned) - set(in_queue)
    assert not missing, f"{len(missing)} confirmed publishes LOST: {sorted(missing)[:20]}"
    assert len(returned) == TASKS * PER_TASK
    duplicates = sum(n - 1 for n in in_queue.values())
    print(f"republished {republished}, nacked and republished {renacked}, duplicates {duplicates}")
    assert republished > 0, "no publish was in flight at the kill"
    assert duplicates <= republished + renacked
