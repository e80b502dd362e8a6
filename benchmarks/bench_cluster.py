"""Cluster benchmark: a quorum queue on a 3-node cluster vs a classic queue on one node, and
what the loss of a worker's node costs (``kill -9`` to the first message handled on a
surviving node).

Run from the trioworker virtualenv (the driver does: ``nox -s bench -- cluster``):
    python benchmarks/bench_cluster.py cluster QUEUE COUNT [--rounds 3] [--kills 6]
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
msg/s and client CPU per message (that process's), the cluster's CPU per message and minor
page faults (the three nodes' ``beam.smp``, from ``/proc``), and the fill rate. Figures are
medians per kind.

**Failover** (``--kills`` kills, ``cluster_failover.py``). A worker (``trioworker run
cluster_app:app``, a real process, the three URLs in order) consumes a quorum queue one
message per call while a publisher on another node sends ``--rate`` messages a second;
``kill -9`` the worker's node and time it to the first message the worker handles on a
surviving node (half of the kills with the victim leading the queue, half not); restart the
node between kills. p50 and max, and the log's split of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio
from _common import BODY, CONTENT_TYPE, Result, parse_args
from cluster_failover import FailoverError, delete, failover, reset

from tests.support.cluster import Cluster
from trioworker.amqp import BasicProperties, connect

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
PERSISTENT = BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
FILL_WINDOW = 1000


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------- queues and the cluster


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


def cluster_usage(cluster: Cluster) -> tuple[float, int] | None:
    """(CPU seconds, minor page faults) of the cluster's nodes (their ``beam.smp``) so far,
    or None if one is not readable (its pid file, written by the node, names the VM). The
    faults tell a VM that keeps mapping fresh memory for a queue's heap, a state that costs
    a queue twice or three times its CPU per message (see "Notes on the figures")."""
    cpu, faults = 0.0, 0
    for node in cluster.nodes:
        try:
            pid = int((node.base / "node.pid").read_text().strip())
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rpartition(")")[2].split()
        except (OSError, ValueError):
            return None
        cpu += (int(fields[11]) + int(fields[12])) / TICKS
        faults += int(fields[7])
    return cpu, faults


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
    before = cluster_usage(cluster)
    proc = await trio.run_process(cmd, cwd=HERE, capture_stdout=True, capture_stderr=True,
                                  check=False)  # fmt: skip
    after = cluster_usage(cluster)
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
        run["cluster_cpu_us_per_msg"] = round((after[0] - before[0]) / args.count * 1e6, 2)
        run["cluster_minor_faults"] = after[1] - before[1]
    return run


# --------------------------------------------------------------------------------- main


def median_of(runs: list[dict[str, Any]], kind: str, key: str) -> float | None:
    values = [float(r[key]) for r in runs if r["kind"] == kind and key in r]
    return statistics.median(values) if values else None


def summarize(args: Any, runs: list[dict[str, Any]], kills: list[dict[str, Any]]) -> Result:
    quorum = sorted((r for r in runs if r["kind"] == "quorum"), key=lambda r: r["msg_per_s"])
    middle = quorum[(len(quorum) - 1) // 2]  # the median quorum run: the run line's figure
    extra: dict[str, Any] = {"rounds": args.rounds, "runs": runs, "kills": kills}
    for kind in ("quorum", "classic"):
        for key, out in (("msg_per_s", "msg_per_s"), ("cpu_us_per_msg", "cpu_us"),
                         ("cluster_cpu_us_per_msg", "cluster_cpu_us"),
                         ("cluster_minor_faults", "cluster_faults"),
                         ("fill_msg_per_s", "fill_msg_per_s")):  # fmt: skip
            value = median_of(runs, kind, key)
            if value is not None:
                extra[f"{kind}_{out}"] = value
    extra["quorum_vs_classic"] = round(extra["quorum_msg_per_s"] / extra["classic_msg_per_s"], 3)
    times = [k["failover_ms"] for k in kills]
    extra |= {
        "failover_p50_ms": statistics.median(times),
        "failover_max_ms": max(times),
        "failover_min_ms": min(times),
        "restart_p50_s": statistics.median(k["restart_s"] for k in kills),
    }
    for victim_led, label in ((True, "leader"), (False, "not_leader")):
        subset = [k["failover_ms"] for k in kills if k["victim_led"] is victim_led]
        if subset:
            extra[f"failover_{label}_p50_ms"] = statistics.median(subset)
    for key in ("sockets_closed_ms", "lost_logged_ms", "reopened_logged_ms"):
        marks = [k[key] for k in kills if k[key] is not None]
        if marks:
            extra[f"{key.removesuffix('_ms')}_p50_ms"] = statistics.median(marks)
    led = sum(k["victim_led"] for k in kills)
    extra["note"] = (
        f"medians of {args.rounds}: quorum {extra['quorum_msg_per_s']:,.0f} msg/s vs classic "
        f"{extra['classic_msg_per_s']:,.0f} ({extra['quorum_vs_classic']:.2f}x); client CPU "
        f"{extra['quorum_cpu_us']:.1f} vs {extra['classic_cpu_us']:.1f} us/msg; "
        f"kill -9 to first message elsewhere: p50 {extra['failover_p50_ms']:,.0f} ms, max "
        f"{extra['failover_max_ms']:,.0f} ms over {len(kills)} kills ({led} of the leader)"
    )
    return Result(
        system="trioworker", version=version("trioworker"), scenario="cluster",
        messages=args.count, seconds=middle["seconds"], cpu_seconds=middle["cpu_seconds"],
        rss_start_mb=0.0, rss_end_mb=0.0, extra=extra,
    )  # fmt: skip


def progress(line: str) -> None:
    print(f"bench_cluster: {line}", file=sys.stderr, flush=True)


async def measure(args: Any, cluster: Cluster, workdir: Path) -> Result:
    with trio.fail_after(args.timeout):
        runs = []
        for rnd in range(1, args.rounds + 1):
            for kind in ("quorum", "classic"):  # alternating, in the same run
                run = await consume_run(args, cluster, kind)
                runs.append(run)
                progress(f"round {rnd} {kind}: {run['msg_per_s']:,.0f} msg/s, client "
                         f"{run['cpu_us_per_msg']:.1f} us/msg, cluster "
                         f"{run.get('cluster_cpu_us_per_msg')} us/msg and "
                         f"{run.get('cluster_minor_faults')} page faults")  # fmt: skip
        kills = await failover(args, cluster, workdir)
        for kill in kills:
            progress(f"kill {kill['victim']} (led the queue: {kill['victim_led']}): sockets "
                     f"closed at {kill['sockets_closed_ms']} ms, lost "
                     f"logged at {kill['lost_logged_ms']} ms, reconnected at "
                     f"{kill['reopened_logged_ms']} ms, first message elsewhere at "
                     f"{kill['failover_ms']:,.1f} ms")  # fmt: skip
    result = summarize(args, runs, kills)
    progress(result.extra["note"])
    return result


def why_failed(exc: BaseException) -> str | None:
    """What went wrong, when the measure failed (raised by us, maybe from inside a nursery,
    in an exception group); None for anything else."""
    if not isinstance(exc, BaseExceptionGroup):
        return str(exc)
    ours, rest = exc.split((BenchError, FailoverError))
    if ours is None or rest is not None:
        return None
    found: list[str] = []
    pending: list[BaseException] = [ours]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
        else:
            found.append(str(current))
    return "; ".join(found)


def main() -> int:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=3, help="consume runs per kind")
        parser.add_argument("--kills", type=int, default=6, help="half with the leader")
        parser.add_argument("--rate", type=float, default=200.0, help="trickle, messages/s")
        parser.add_argument("--steady", type=int, default=50,
                            help="messages handled on the node before it is killed")  # fmt: skip
        parser.add_argument("--settle", type=float, default=1.0, help="pause after fill, s")
        parser.add_argument("--timeout", type=float, default=720.0,
                            help="seconds for all of it (the driver allows 900)")  # fmt: skip

    args = parse_args(__doc__ or "", ("cluster",), configure)
    # A SIGTERM (a timeout, an operator) still stops the cluster: SystemExit unwinds.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-cluster-"))
    cluster = Cluster()
    try:
        started = time.perf_counter()
        cluster.start()
        progress(f"3-node cluster up in {time.perf_counter() - started:.1f} s")
        result = trio.run(measure, args, cluster, workdir)
    except (BenchError, FailoverError, BaseExceptionGroup) as exc:
        reason = why_failed(exc)
        if reason is None:
            raise  # a bug: keep the traceback
        print(f"bench_cluster.py: {reason}", file=sys.stderr)  # the driver shows it
        return 1
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
