"""Cluster benchmark: a quorum queue on a 3-node cluster vs a classic queue on one node, and
what the loss of a worker's node costs (``kill -9`` to the first message handled on a
surviving node).

Run from the trioworker virtualenv (the driver does: ``nox -s bench -- cluster``):
    python benchmarks/bench_cluster.py cluster QUEUE COUNT [--rounds 3] [--kills 5]
Prints one JSON line (see ``_common.Result``).

The cluster is private: ``tests/support/cluster.py``'s :class:`Cluster` (three nodes
``tw-cN-<pid>@localhost`` on ports of their own, one Erlang cookie, plugins off, joined with
``join_cluster``), started here and stopped at the end whatever happens. The shared broker
(``--url``) is not used: every queue named after QUEUE lives on the cluster and goes with it.
Only the cluster's own processes and the worker started here are ever killed.

**Consume** (``--rounds`` rounds, quorum then classic in each: the same run, alternating).
Each run declares its queue through node 1 — a quorum queue (``x-queue-type=quorum``, three
replicas, its leader on node 1) or a durable classic queue (on node 1 alone) — fills it with
COUNT persistent 256-byte JSON messages (publisher confirms, window 1000) and runs the
``route-bulk`` benchmark on it (``bench_framework.py bulk``: an App's bulk route, bulk 256,
prefetch 1024) connected to the queue's leader node, in a process of its own. Per run:
msg/s and client CPU per message (that process's), the cluster's CPU per message (the three
nodes' ``beam.smp``, from ``/proc``), and the fill rate. Figures are medians per kind.

**Failover** (``--kills`` kills). A worker (``trioworker run cluster_app:app``, a real
process, the three URLs in order 1, 2, 3) consumes a quorum queue one message per call,
stamping each on a file (see ``cluster_app.py``), while a publisher on another node sends
``--rate`` persistent messages a second. Each kill: once the worker handles messages on its
node, ``kill -9`` that node; the figure is the time from the kill to the first message the
worker handles on a surviving node — the worker sees its socket close, connects to the
next URL, redeclares, consumes, and gets its unacked messages back or the next published
one (and, when the dead node led the queue, waits for a new leader). Then the node is
restarted (it rejoins; its replica catches up) before the next kill.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio
from _common import BODY, CONTENT_TYPE, Result, parse_args

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # ``tests`` (the cluster fixture's code) is importable

from tests.cluster._helpers import node_in_log, port_of  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.private_node import PrivateNode  # noqa: E402
from trioworker import Queue  # noqa: E402
from trioworker.amqp import BasicProperties, connect  # noqa: E402

BIN = Path(sys.executable).parent  # the venv's bin/ (not resolved: it would leave the venv)
TICKS = os.sysconf("SC_CLK_TCK")
PERSISTENT = BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
FILL_WINDOW = 1000
WAIT = 120.0  # upper bound for what must happen (two cores shared by three nodes and us)


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------- queues and the cluster


def arguments(kind: str) -> dict[str, Any]:
    return Queue("x", kind="quorum").declare_arguments() if kind == "quorum" else {}


async def reset(url: str, name: str, kind: str) -> None:
    async with connect(url, connection_name="bench-cluster-admin") as conn, conn.channel() as ch:
        await ch.queue_delete(name)
        await ch.queue_declare(name, durable=True, arguments=arguments(kind))


async def delete(url: str, name: str) -> None:
    async with connect(url, connection_name="bench-cluster-admin") as conn, conn.channel() as ch:
        await ch.queue_delete(name)


async def depth(url: str, name: str) -> int:
    async with connect(url, connection_name="bench-cluster-admin") as conn, conn.channel() as ch:
        return (await ch.queue_declare(name, passive=True)).message_count or 0


async def fill(url: str, name: str, count: int) -> float:
    """Publish ``count`` messages with confirms (a window); return the seconds it took."""
    start = time.perf_counter()
    async with connect(url, connection_name="bench-cluster-fill") as conn, conn.channel() as ch:
        await ch.confirm_select()
        confirmations = []
        for _ in range(count):
            await ch.wait_for_confirms(max_outstanding=FILL_WINDOW - 1)
            confirmations.append(await ch.publish(BODY, routing_key=name, properties=PERSISTENT))
        await ch.wait_for_confirms(max_outstanding=0)
    nacked = sum(not c.acked for c in confirmations)
    if nacked:
        raise BenchError(f"the cluster nacked {nacked} of {count} publishes filling {name!r}")
    return time.perf_counter() - start


def cluster_cpu(cluster: Cluster) -> float | None:
    """CPU seconds the cluster's nodes (their ``beam.smp``) have spent, or None if one is
    not readable (its pid file, written by the node, names the VM)."""
    total = 0.0
    for node in cluster.nodes:
        try:
            pid = int((node.base / "node.pid").read_text().strip())
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rpartition(")")[2].split()
        except (OSError, ValueError):
            return None
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


# ------------------------------------------------------------------------------ consume


async def consume_run(args: Any, cluster: Cluster, kind: str) -> dict[str, Any]:
    """One consume run of ``kind`` ("quorum" or "classic"); its figures."""
    name = f"{args.queue}-{kind}"
    first = cluster.nodes[0]
    await reset(first.amqp_url, name, kind)
    fill_s = await fill(first.amqp_url, name, args.count)
    node = first
    if kind == "quorum":  # declared through node 1, so led from there (client-local)
        node = await trio.to_thread.run_sync(cluster.leader, name)
    if (have := await depth(node.amqp_url, name)) != args.count:
        raise BenchError(f"{name!r} holds {have} messages after the fill, not {args.count}")
    await trio.sleep(args.settle)
    cmd = [sys.executable, str(HERE / "bench_framework.py"), "bulk", name, str(args.count)]
    cmd += ["--url", node.amqp_url, "--prefetch", str(args.prefetch)]
    cmd += ["--bulk-size", str(args.bulk_size), "--flush-interval", str(args.flush_interval)]
    before = cluster_cpu(cluster)
    proc = await trio.run_process(cmd, cwd=HERE, capture_stdout=True, capture_stderr=True,
                                  check=False)  # fmt: skip
    after = cluster_cpu(cluster)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-10:]
        raise BenchError(f"{kind} run exited {proc.returncode}:\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if (left := await depth(node.amqp_url, name)) != 0:
        raise BenchError(f"the {kind} run left {left} messages in {name!r}")
    await delete(node.amqp_url, name)
    run = {
        "kind": kind,
        "node": node.nodename,
        "msg_per_s": result["msg_per_s"],
        "seconds": result["seconds"],
        "handled_s": result["handled_s"],
        "cpu_seconds": result["cpu_seconds"],
        "cpu_us_per_msg": result["cpu_us_per_msg"],
        "fill_msg_per_s": round(args.count / fill_s, 1),
    }
    if before is not None and after is not None:
        run["cluster_cpu_us_per_msg"] = round((after - before) / args.count * 1e6, 2)
    return run


# ----------------------------------------------------------------------------- failover


class Records:
    """The worker's stamps (``cluster_app.py``), read as the file grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.rows: list[tuple[float, int, bool]] = []  # (monotonic, node port, redelivered)

    def poll(self) -> list[tuple[float, int, bool]]:
        """The rows written since the last poll."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        new = []
        for line in lines:
            stamp, node, _, redelivered = line.split()
            port = int(node.rsplit(b":", 1)[1]) if b":" in node else 0
            new.append((float(stamp), port, redelivered == b"1"))
        self.rows += new
        return new


async def until(records: Records, condition: Any, what: str) -> tuple[float, int, bool]:
    """Poll the records until a new row satisfies ``condition``; that row."""
    with trio.move_on_after(WAIT):
        while True:
            for row in records.poll():
                if condition(row):
                    return row
            await trio.sleep(0.01)
    raise BenchError(f"not within {WAIT:.0f} s: {what}")


async def trickle(url: str, name: str, rate: float, nacks: list[int],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
    """Publish ``rate`` persistent messages a second (ids as digits), with confirms, until
    cancelled; count the nacks (none expected: this node stays up)."""
    async with connect(url, connection_name="bench-cluster-trickle") as conn, conn.channel() as ch:
        await ch.confirm_select()
        task_status.started()
        pending = []
        n = 0
        next_at = trio.current_time()
        while True:
            await ch.wait_for_confirms(max_outstanding=FILL_WINDOW)
            n += 1
            pending.append(await ch.publish(b"%d" % n, routing_key=name, properties=PERSISTENT))
            nacks[0] += sum(c.done and not c.acked for c in pending)
            pending = [c for c in pending if not c.done]
            next_at += 1 / rate
            await trio.sleep_until(next_at)


def online_members(cluster: Cluster, name: str) -> int:
    """How many of the quorum queue's members are online (CLI: once per kill, not polled
    fast)."""
    out = cluster.ctl("list_queues", "-q", "name", "online")
    for line in out.splitlines():
        fields = line.split(maxsplit=1)
        if fields and fields[0] == name and len(fields) == 2:
            return fields[1].count("@")
    return 0


async def whole(cluster: Cluster, name: str) -> None:
    """Wait until every member of the queue is online again (the restarted one caught up)."""
    with trio.move_on_after(WAIT):
        while await trio.to_thread.run_sync(online_members, cluster, name) < len(cluster.nodes):
            await trio.sleep(0.5)
        return
    raise BenchError(f"quorum queue {name!r} not whole again within {WAIT:.0f} s")


async def failover(args: Any, cluster: Cluster, workdir: Path) -> list[dict[str, Any]]:
    name = f"{args.queue}-failover"
    first = cluster.nodes[0]
    await reset(first.amqp_url, name, "quorum")
    records = Records(workdir / "records.txt")
    log_path = workdir / "worker.log"
    env = dict(os.environ, TRIOWORKER_AMQP_URL=",".join(cluster.urls), BENCH_QUEUE=name,
               BENCH_RECORDS=str(records.path))  # fmt: skip
    argv = [str(BIN / "trioworker"), "run", "cluster_app:app", "--app-dir", str(HERE)]
    kills: list[dict[str, Any]] = []
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(argv, env=env, cwd=HERE, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with trio.fail_after(WAIT):
            while (where := node_in_log(log_path.read_text(errors="replace"))) is None:
                if worker.poll() is not None:
                    raise BenchError("the worker exited:\n" + log_path.read_text()[-3000:])
                await trio.sleep(0.1)
        on = cluster.node_on_port(port_of(where))
        async with trio.open_nursery() as nursery:
            for k in range(args.kills):
                kills.append(await one_kill(args, cluster, name, records, on, nursery))
                on = cluster.node_on_port(kills[-1]["to_port"])
            nursery.cancel_scope.cancel()
        if worker.poll() is not None:
            raise BenchError("the worker died:\n" + log_path.read_text()[-3000:])
        worker.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(worker.wait, 60)
        if worker.returncode != 0:
            raise BenchError(f"the worker exited {worker.returncode} after SIGTERM")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        with trio.move_on_after(30):
            await delete(cluster.running()[0].amqp_url, name)
    return kills


async def one_kill(args: Any, cluster: Cluster, name: str, records: Records,
                   victim: PrivateNode, nursery: trio.Nursery) -> dict[str, Any]:  # fmt: skip
    """Kill the worker's node ``victim`` and time it to the first message on another node."""
    # A fresh publisher on a node that stays up, so the trickle never stops.
    nursery.cancel_scope.cancel() if False else None
    publisher = next(n for n in cluster.running() if n is not victim)
    nacks = [0]
    scope = trio.CancelScope()

    async def publish(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await trickle(publisher.amqp_url, name, args.rate, nacks, task_status=task_status)

    await nursery.start(publish)
    try:
        # Steady state: the worker handles the trickle on its node.
        seen = 0

        def steady(row: tuple[float, int, bool]) -> bool:
            nonlocal seen
            seen += row[1] == victim.port
            return seen >= args.steady

        await until(records, steady, f"{args.steady} messages handled on {victim.nodename}")
        leader = await trio.to_thread.run_sync(cluster.leader, name)
        killed_at = time.monotonic()
        await trio.to_thread.run_sync(cluster.kill, victim)
        stale = 0

        def elsewhere(row: tuple[float, int, bool]) -> bool:
            nonlocal stale
            if row[0] > killed_at and row[1] == victim.port:
                stale += 1  # handled between the kill and the worker noticing it
            return row[0] > killed_at and row[1] not in (0, victim.port)

        stamp, port, redelivered = await until(records, elsewhere, "a message after the kill")
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
        "first_redelivered": redelivered,
        "stale_after_kill": stale,
        "to_port": port,
        "restart_s": round(restart_s, 2),
        "publisher": publisher.nodename,
        "trickle_nacks": nacks[0],
    }
