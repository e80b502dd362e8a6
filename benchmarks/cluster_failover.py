"""The failover phase of ``bench_cluster.py``: ``kill -9`` the node a worker is on, and time
it to the first message the worker handles on a surviving node.

The worker is ``trioworker run cluster_app:app`` (a real process, JSON logs), given the
cluster's three URLs in order; it consumes a quorum queue one message per handler call and
stamps every message on a file (``cluster_app.py``). For each kill:

1. a publisher on a node that stays up sends ``--rate`` persistent messages a second (a
   fresh one per kill: the node it was on may be the next victim);
2. the queue's leadership is moved, with RabbitMQ's own transfer (the one maintenance mode
   uses), onto the worker's node for the 1st, 3rd, ... kill and away from it for the 2nd,
   4th, ..., so that both costs are measured: losing a node that leads the queue adds the
   election of a new leader (nothing can be delivered meanwhile) to the worker's own
   failover;
3. once the worker has handled ``--steady`` of that publisher's messages on its node, the
   node is ``kill -9``-ed, and the clock (``CLOCK_MONOTONIC``, the same in every process)
   is read right before the signal;
4. the figure is the stamp of the first message handled afterwards on another node, minus
   the kill. Split: an idle "sentinel" connection of the harness's to the victim stamps
   when the dying node's sockets closed; the worker's log gives the ``lost or refused``
   line (the dead connection seen and torn down) and the ``open on node`` line (the next
   URL connected; then the channel, QoS, redeclare, consume and the first delivery);
5. the node is restarted on its data (it rejoins) and the harness waits until the queue's
   three members are online again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import trio
from _common import CONTENT_TYPE

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # ``tests`` (the cluster fixture's code) is importable

from tests.cluster._helpers import node_in_log, port_of  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.private_node import PrivateNode  # noqa: E402
from trioworker import Queue  # noqa: E402
from trioworker.amqp import AMQPError, BasicProperties, Confirmation, connect  # noqa: E402

PERSISTENT = BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
WINDOW = 1000  # unconfirmed trickle publishes at most (never reached: a few ms each)
WAIT = 120.0  # upper bound for what must happen (two cores shared by three nodes and us)
LOST = " lost or refused ("
OPENED = "AMQP connection 'default' open on node "

Row = tuple[float, int, bool]  # (monotonic stamp, port of the node, redelivered)


class FailoverError(RuntimeError):
    pass


async def reset(url: str, name: str, kind: str) -> None:
    """Delete and declare queue ``name``: a quorum queue or a durable classic one."""
    arguments = Queue(name, kind="quorum").declare_arguments() if kind == "quorum" else {}
    async with connect(url, connection_name="bench-cluster-admin") as conn, conn.channel() as ch:
        await ch.queue_delete(name)
        await ch.queue_declare(name, durable=True, arguments=arguments)


async def delete(url: str, name: str) -> None:
    async with connect(url, connection_name="bench-cluster-admin") as conn, conn.channel() as ch:
        await ch.queue_delete(name)


class Records:
    """The worker's stamps (``cluster_app.py``), read as the file grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[Row]:
        """The rows written since the last poll."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        rows = []
        for line in lines:
            stamp, node, _, redelivered = line.split()
            port = int(node.rsplit(b":", 1)[1]) if b":" in node else 0
            rows.append((float(stamp), port, redelivered == b"1"))
        return rows

    async def until(self, condition: Callable[[Row], bool], what: str) -> Row:
        """Poll until a new row satisfies ``condition``; that row. (Polling a file costs
        nothing the worker would notice; the stamps, not the poll, carry the time.)"""
        with trio.move_on_after(WAIT):
            while True:
                for row in self.poll():
                    if condition(row):
                        return row
                await trio.sleep(0.01)
        raise FailoverError(f"not within {WAIT:.0f} s: {what}")


async def trickle(
    url: str,
    name: str,
    rate: float,
    nacks: list[int],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish ``rate`` persistent messages a second, with confirms, until cancelled; count
    the nacks in ``nacks[0]`` (a publish to a queue without a leader may be nacked)."""
    async with connect(url, connection_name="bench-cluster-trickle") as conn, conn.channel() as ch:
        await ch.confirm_select()
        task_status.started()
        pending: list[Confirmation] = []
        n = 0
        next_at = trio.current_time()
        while True:
            await ch.wait_for_confirms(max_outstanding=WINDOW)
            n += 1
            pending.append(await ch.publish(b"%d" % n, routing_key=name, properties=PERSISTENT))
            nacks[0] += sum(c.done and not c.acked for c in pending)
            pending = [c for c in pending if not c.done]
            next_at += 1 / rate
            await trio.sleep_until(next_at)


async def sentinel(url: str, closed: list[float], task_status: trio.TaskStatus[None]) -> None:
    """Hold an idle connection to a node and stamp the moment it ends: when the killed
    node's sockets were closed, seen by a client with nothing else to do (the worker's own
    detection comes on top of that)."""
    try:
        async with connect(url, connection_name="bench-cluster-sentinel") as conn:
            task_status.started()
            try:
                await conn.wait_closed()
            finally:
                closed.append(time.monotonic())
    except AMQPError:
        pass  # the node died: what the sentinel waits for


# ------------------------------------------------------------------ the queue's members


def online_members(cluster: Cluster, name: str) -> int:
    out = cluster.ctl("list_queues", "-q", "name", "online")
    for line in out.splitlines():
        fields = line.split(maxsplit=1)
        if len(fields) == 2 and fields[0] == name:
            return fields[1].count("@")
    return 0


def lead_from(cluster: Cluster, name: str, node: PrivateNode) -> PrivateNode:
    """Move the queue's leadership to ``node`` (``rabbit_quorum_queue:transfer_leadership``,
    RabbitMQ 3.10); return the node that leads it then (``node`` unless the move failed)."""
    if cluster.leader(name) is node:
        return node
    expression = (
        f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"{name}">>)), '
        f"rabbit_quorum_queue:transfer_leadership(Q, '{node.nodename}')."
    )
    try:
        cluster.running()[0].eval(expression)
    except subprocess.CalledProcessError:
        return cluster.leader(name)  # another RabbitMQ: whatever leads, say so
    deadline = time.monotonic() + 10
    while (leader := cluster.leader(name)) is not node and time.monotonic() < deadline:
        time.sleep(0.2)
    return leader


async def whole(cluster: Cluster, name: str) -> None:
    """Wait until every member of the queue is online (the restarted one back)."""
    members = len(cluster.nodes)
    with trio.move_on_after(WAIT):
        while await trio.to_thread.run_sync(online_members, cluster, name) < members:  # noqa: ASYNC110 - the broker's state, polled
            await trio.sleep(0.5)
        return
    raise FailoverError(f"quorum queue {name!r} not whole again within {WAIT:.0f} s")


def log_marks(log: str, since: float) -> tuple[float | None, float | None]:
    """Wall-clock times of the first ``lost or refused`` line of the default connection at
    or after ``since``, and of the ``open on node`` line that follows it."""
    lost = opened = None
    for line in log.splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["time"]).timestamp()
            message = str(entry["message"])
        except (ValueError, KeyError, TypeError):
            continue  # not a log record (an interpreter's warning, say)
        if at < since - 0.002:  # the log's times are truncated to the millisecond
            continue
        if lost is None and message.startswith("AMQP connection 'default'") and LOST in message:
            lost = at
        elif lost is not None and message.startswith(OPENED):
            opened = at
            break
    return lost, opened


# ------------------------------------------------------------------------------ the run


async def failover(args: Any, cluster: Cluster, workdir: Path) -> list[dict[str, Any]]:
    """Start the worker, kill its node ``args.kills`` times; one dict per kill."""
    name = f"{args.queue}-failover"
    await reset(cluster.nodes[0].amqp_url, name, "quorum")
    records = Records(workdir / "records.txt")
    log_path = workdir / "worker.log"
    env = dict(os.environ, TRIOWORKER_AMQP_URL=",".join(cluster.urls), BENCH_QUEUE=name,
               BENCH_RECORDS=str(records.path))  # fmt: skip
    argv = [str(Path(sys.executable).parent / "trioworker"), "run", "cluster_app:app",
            "--app-dir", str(HERE), "--log-format", "json"]  # fmt: skip
    kills: list[dict[str, Any]] = []
    with open(log_path, "wb") as log:  # noqa: ASYNC230 - a local file, before any work
        worker = await trio.lowlevel.open_process(
            argv, env=env, cwd=HERE, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        with trio.fail_after(WAIT):
            while (where := node_in_log(log_path.read_text(errors="replace"))) is None:
                if worker.poll() is not None:
                    raise FailoverError("the worker exited:\n" + log_path.read_text()[-3000:])
                await trio.sleep(0.1)
        on = cluster.node_on_port(port_of(where))
        async with trio.open_nursery() as nursery:
            for k in range(args.kills):
                kill = await one_kill(args, cluster, name, records, on, k % 2 == 0, nursery)
                wall = kill.pop("wall")
                for key, at in zip(("lost_logged_ms", "reopened_logged_ms"),
                                   log_marks(log_path.read_text(errors="replace"), wall),
                                   strict=True):  # fmt: skip
                    kill[key] = None if at is None else round((at - wall) * 1e3, 1)
                kills.append(kill)
                on = cluster.node_on_port(kill.pop("to_port"))
        if worker.poll() is not None:
            raise FailoverError("the worker died:\n" + log_path.read_text()[-3000:])
        worker.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            await worker.wait()
        if worker.returncode != 0:
            raise FailoverError(f"the worker exited {worker.returncode} after SIGTERM")
    finally:
        if worker.poll() is None:
            worker.kill()
            with trio.CancelScope(shield=True):
                await worker.wait()
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await delete(cluster.running()[0].amqp_url, name)
    return kills


async def one_kill(
    args: Any,
    cluster: Cluster,
    name: str,
    records: Records,
    victim: PrivateNode,
    lead: bool,
    nursery: trio.Nursery,
) -> dict[str, Any]:
    """Kill the worker's node ``victim`` (leading the queue if ``lead``) and time it to the
    first message handled on another node."""
    others = [n for n in cluster.running() if n is not victim]
    publisher = others[0]
    nacks = [0]
    scope = trio.CancelScope()

    async def publish(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await trickle(publisher.amqp_url, name, args.rate, nacks, task_status=task_status)

    await nursery.start(publish)
    try:
        target = victim if lead else others[-1]
        leader = await trio.to_thread.run_sync(lead_from, cluster, name, target)
        started_at = time.monotonic()
        seen = 0

        def steady(row: Row) -> bool:  # the worker handles the trickle on its node
            nonlocal seen
            seen += row[0] > started_at and row[1] == victim.port
            return seen >= int(args.steady)

        await records.until(steady, f"{args.steady} messages handled on {victim.nodename}")
        closed: list[float] = []
        await nursery.start(sentinel, victim.amqp_url, closed)

        def kill() -> tuple[float, float]:
            at = time.monotonic(), time.time()
            cluster.kill(victim)
            return at

        killed_at, wall = await trio.to_thread.run_sync(kill)
        stale = 0

        def elsewhere(row: Row) -> bool:
            nonlocal stale
            if row[0] > killed_at and row[1] == victim.port:
                stale += 1  # handled between the kill and the worker seeing its socket end
            return row[0] > killed_at and row[1] not in (0, victim.port)

        stamp, port, redelivered = await records.until(elsewhere, "a message after the kill")
        with trio.move_on_after(WAIT):
            while not closed:  # noqa: ASYNC110 - stamped by the sentinel task, long since
                await trio.sleep(0.01)
        if not closed:
            raise FailoverError(f"the sentinel's connection to {victim.nodename} outlived it")
        restart_start = time.monotonic()
        await trio.to_thread.run_sync(cluster.restart, victim)
        restart_s = time.monotonic() - restart_start
        await whole(cluster, name)
    finally:
        scope.cancel()
    return {
        "victim": victim.nodename,
        "victim_led": leader is victim,
        "failover_ms": round((stamp - killed_at) * 1e3, 1),
        "sockets_closed_ms": round((closed[0] - killed_at) * 1e3, 1),
        "first_redelivered": redelivered,
        "stale_after_kill": stale,
        "restart_s": round(restart_s, 2),
        "publisher": publisher.nodename,
        "trickle_nacks": nacks[0],
        "wall": wall,
        "to_port": port,
    }
