"""Failover of consuming workers: the quorum queue's leader killed, then a worker's node.

20,000 persistent messages in a quorum queue (three replicas, a delivery limit and
at-least-once dead-lettering, as ``tests/cluster/app_module.py`` declares it) are consumed
in bulks by two workers, real ``trioworker run`` processes, each given the cluster's three
URLs (``TRIOWORKER_AMQP_URL``, comma-separated) in its own order. Mid-run the node leading
the queue is ``kill -9``-ed, and — once it is back — the node a worker is connected to.

What must hold: every message handled; handled twice only what the killed connections held
unacknowledged (at most one prefetch window per worker per connection lost); the queue and
its dead-letter queue empty at the end; both workers still alive, healthy, and saying (log,
``/health``, ``/metrics``) which node they are on; a graceful stop still exits 0.

The same holds through a rolling restart: each node stopped gracefully and started again in
turn while the workers consume.
"""

from __future__ import annotations

import re
import secrets
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio

from tests.cli._helpers import CLIProcess, cli_env, handled_ids
from tests.cluster import app_module
from tests.support.cluster import Cluster
from tests.support.private_node import PrivateNode, free_port

from ._helpers import (
    MUST_HAPPEN,
    declare,
    delete_queues,
    fill,
    node_in_log,
    port_of,
    queue_state,
    wait_for,
    wait_for_value,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TOTAL = 20_000
PREFETCH = 300
BULK = 100


class Worker:
    """One ``trioworker run tests.cluster.app_module:app`` process and its HTTP port."""

    def __init__(
        self, directory: Path, results: Path, queue: str, urls: list[str], sleep: float = 0.02
    ) -> None:
        self.http_port = free_port()
        env = cli_env(
            TRIOWORKER_AMQP_URL=",".join(urls),
            TRIOWORKER_HTTP_PORT=str(self.http_port),
            CLUSTER_TEST_QUEUE=queue,
            CLUSTER_TEST_RESULTS=str(results),
            CLUSTER_TEST_PREFETCH=str(PREFETCH),
            CLUSTER_TEST_BULK=str(BULK),
            CLUSTER_TEST_SLEEP=str(sleep),
        )
        self.process = CLIProcess(directory, "tests.cluster.app_module:app", env=env)

    def node(self) -> str | None:
        """The node the worker's consumer connection opened on last (its log says)."""
        return node_in_log(self.process.log())

    def on(self, node: PrivateNode) -> bool:
        where = self.node()
        return where is not None and port_of(where) == node.port

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.get(f"http://127.0.0.1:{self.http_port}{path}")


async def test_killing_the_leader_then_a_workers_node_loses_no_message(
    healthy_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = healthy_cluster
    name = f"tw-cluster-orders-{secrets.token_hex(4)}"
    queue = app_module.queue(name)
    dead_letters = queue.dead_letter_queue()
    assert dead_letters is not None
    first = cluster.nodes[0]
    # Declared through node 1, so that its leader starts there (client-local placement).
    await declare(first.amqp_url, dead_letters.name, dead_letters.declare_arguments())
    await declare(first.amqp_url, name, queue.declare_arguments())
    results = tmp_path / "results"
    results.mkdir()
    workers: list[Worker] = []
    try:
        await fill(first.amqp_url, name, range(TOTAL))
        urls = cluster.urls
        for order in ((0, 1, 2), (1, 2, 0)):  # worker 1 starts on node 1, worker 2 on node 2
            workers.append(Worker(tmp_path, results, name, [urls[i] for i in order]))
        await wait_for(lambda: all(w.node() for w in workers), "both workers connected")

        def handled() -> int:
            return len(handled_ids(results))

        # ---- kill -9 the node that leads the queue ---------------------------------
        await wait_for(lambda: handled() >= 3_000, "3,000 handled before the first kill")
        leader = await trio.to_thread.run_sync(cluster.leader, name)
        exposed = [w for w in workers if w.on(leader)]
        at_kill = handled()
        await trio.to_thread.run_sync(cluster.kill, leader)
        await wait_for(
            lambda: handled() >= at_kill + 2_000 and not any(w.on(leader) for w in workers),
            "2,000 more handled after the leader's kill, no worker on it",
        )
        # ---- then the node a worker is connected to, once the first one is back -------
        # Held meanwhile, so that messages are left (some unacknowledged, in the workers'
        # hands) for the second kill.
        (results / "hold").touch()
        await trio.to_thread.run_sync(cluster.restart, leader)
        node = workers[1].node()
        assert node is not None
        victim = cluster.node_on_port(port_of(node))
        exposed += [w for w in workers if w.on(victim)]
        at_second_kill = handled()
        await trio.to_thread.run_sync(cluster.kill, victim)
        (results / "hold").unlink()
        assert at_second_kill < TOTAL, "everything was handled before the second kill"

        await wait_for(
            lambda: len(set(handled_ids(results))) >= TOTAL, "every message handled", 180
        )
        # ---- the workers are alive, healthy, and say where they are -----------------
        for worker in workers:
            assert worker.process.proc.poll() is None, worker.process.log()
            assert not worker.on(victim)
            where = worker.node()
            health = (await worker.get("/health")).json()["backends"]["amqp"]
            assert health["ok"] is True, health
            assert health["detail"] == f"connection 'default' on {where}", health
            metrics = (await worker.get("/metrics")).text
            connected = re.findall(
                r'trioworker_amqp_connected_node\{connection="default",node="([^"]+)"\} 1', metrics
            )
            assert connected == [where], metrics
        # A graceful stop after failovers: decisions sent, channels closed, exit 0.
        for worker in workers:
            worker.process.send(signal.SIGTERM)
        for worker in workers:
            assert worker.process.wait(MUST_HAPPEN) == 0, worker.process.log()
        assert (await queue_state(cluster, name))[0] == 0, "messages left in the queue"
        assert (await queue_state(cluster, dead_letters.name))[0] == 0, "dead-lettered"
        # The consumers the workers had on the killed node stay counted (suspected down)
        # until it is back; then none may be left.
        await trio.to_thread.run_sync(cluster.restart, victim)
        await wait_for_value(lambda: queue_state(cluster, name), (0, 0), "no consumer left")
    finally:
        for worker in workers:
            worker.process.kill()
            print(f"----- {worker.process.log_path} -----\n{worker.process.log()[-6000:]}")
        await delete_queues(cluster, name, dead_letters.name)

    ids = handled_ids(results)
    assert set(ids) == set(range(TOTAL)), f"{TOTAL - len(set(ids))} messages LOST"
    twice = sum(n - 1 for n in Counter(ids).values())
    window = len(exposed) * PREFETCH
    print(
        f"handled {len(ids)}: {twice} twice; connections lost with a node: {len(exposed)}; "
        f"first kill at {at_kill}, second at {at_second_kill}"
    )
    assert twice <= window, f"{twice} handled twice, more than the unacked windows ({window})"


ROLLING_TOTAL = 8_000
#: Seconds a bulk takes in the rolling restart: 400 messages/s for the two workers, so that
#: messages are left for the last node's stop.
ROLLING_SLEEP = 0.5


async def test_a_rolling_restart_of_the_cluster_loses_no_message(
    healthy_cluster: Cluster, tmp_path: Path
) -> None:
    """Each node in turn stopped gracefully (its clients get ``CONNECTION_FORCED``, its
    quorum leadership moves) and started again, while two workers consume."""
    cluster = healthy_cluster
    name = f"tw-cluster-rolling-{secrets.token_hex(4)}"
    queue = app_module.queue(name)
    dead_letters = queue.dead_letter_queue()
    assert dead_letters is not None
    first = cluster.nodes[0]
    await declare(first.amqp_url, dead_letters.name, dead_letters.declare_arguments())
    await declare(first.amqp_url, name, queue.declare_arguments())
    results = tmp_path / "results"
    results.mkdir()
    workers: list[Worker] = []
    lost_connections = 0
    try:
        await fill(first.amqp_url, name, range(ROLLING_TOTAL))
        urls = cluster.urls
        for order in ((0, 1, 2), (2, 0, 1)):
            nodes = [urls[i] for i in order]
            workers.append(Worker(tmp_path, results, name, nodes, sleep=ROLLING_SLEEP))
        await wait_for(lambda: all(w.node() for w in workers), "both workers connected")
        for node in cluster.nodes:
            target = len(handled_ids(results)) + 500
            await wait_for(lambda t=target: len(handled_ids(results)) >= t, "500 more handled")
            lost_connections += sum(w.on(node) for w in workers)
            await trio.to_thread.run_sync(node.halt)  # while the workers consume
            (results / "hold").touch()  # held while it boots: messages left for the next
            await trio.to_thread.run_sync(cluster.restart, node)
            (results / "hold").unlink()
            done = len(set(handled_ids(results)))
            print(f"{node.nodename} restarted: {done} handled")
            assert done < ROLLING_TOTAL, "everything handled before the last node's restart"
        await wait_for(
            lambda: len(set(handled_ids(results))) >= ROLLING_TOTAL, "every message handled"
        )
        for worker in workers:
            assert worker.process.proc.poll() is None, worker.process.log()
            worker.process.send(signal.SIGTERM)
        for worker in workers:
            assert worker.process.wait(MUST_HAPPEN) == 0, worker.process.log()
        await wait_for_value(lambda: queue_state(cluster, name), (0, 0), "queue empty, no one")
        assert (await queue_state(cluster, dead_letters.name))[0] == 0, "dead-lettered"
    finally:
        for worker in workers:
            worker.process.kill()
            print(f"----- {worker.process.log_path} -----\n{worker.process.log()[-4000:]}")
        await delete_queues(cluster, name, dead_letters.name)

    ids = handled_ids(results)
    assert set(ids) == set(range(ROLLING_TOTAL)), f"{ROLLING_TOTAL - len(set(ids))} LOST"
    twice = sum(n - 1 for n in Counter(ids).values())
    print(f"handled {len(ids)}: {twice} twice; connections closed by a stop: {lost_connections}")
    assert twice <= lost_connections * PREFETCH
