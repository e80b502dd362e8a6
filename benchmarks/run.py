"""Benchmark driver: runs every system in the same run, alternating, and prints medians + ratios.

Stdlib only. Each system runs as a subprocess with the interpreter of its own virtualenv:

    python benchmarks/run.py --python trioworker=.nox/bench/bin/python \\
        --python aio-pika=.nox/bench-peers/aio-pika/bin/python \\
        --python pika=.nox/bench-peers/pika/bin/python \\
        --python asyncworker=.nox/bench-peers/asyncworker/bin/python \\
        --python faststream=.nox/bench-peers/faststream/bin/python  [SCENARIO ...]

For each scenario and each round, for each system in turn (ours, peer, ours, peer, ...):
reset the durable queue (delete + declare), pre-fill it when the scenario consumes, run the
system's script, then check the queue depth it left. Usually run through ``nox -s bench``.
Client scenarios: consume, publish, publish-persistent, rss. Worker-framework scenarios:
route-bulk, route-each, route-rss, route-retry, route-retry-dlq (ours runs
``bench_framework.py``), stream-consume (``bench_streams.py``: a route reading a stream from
"first" vs pika's stream consumer; each run fills its own stream). RPC: rpc (latency with
one caller, calls/s with 64; ``bench_rpc.py`` vs ``bench_rpc_aiopika.py``), nameko-rpc
(``bench_nameko.py``: our ``@app.nameko.rpc`` and ``app.nameko.call`` vs Nameko 2.14.1, run
in its own venv by the script). CLI (``bench_cli.py``,
the command measured from outside its process tree): cli-workers (``trioworker run --workers
2`` vs ``--workers 1``), startup (``trioworker run`` vs ``faststream run``: first message,
idle RSS). Pools: route-pool (``bench_pools.py``: a CPU-bound route in a process pool, a
thread pool and on the loop). WebSocket: websocket-echo (``bench_websocket.py``: an
``@app.http.websocket`` echo route vs a raw ASGI echo app on the same hypercorn, 1 and 100
clients; no broker). Cluster: cluster (``bench_cluster.py``: a private 3-node cluster; a
quorum queue vs a classic queue, and node kill to first message on a surviving node).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OURS = "trioworker"
SCRIPTS = {  # each system's default script; a scenario may name another (``scripts``)
    "trioworker": "bench_trioworker.py",
    "aio-pika": "bench_aiopika.py",
    "pika": "bench_pika.py",
    "asyncworker": "bench_asyncworker.py",
    "faststream": "bench_faststream.py",
}
FRAMEWORK = "bench_framework.py"  # trioworker's App (routes), from the trioworker venv
ADMIN = "pika"  # reset / depth / delete always go through pika: independent of our client


@dataclass(frozen=True)
class Goal:
    min_rate: float | None = None  # ours, msg/s
    min_ratio: dict[str, float] | None = None  # ours / peer
    max_rss_growth_mb: float | None = None
    max_p50_ms: float | None = None  # ours, median of the runs' one-caller p50 latency


@dataclass(frozen=True)
class Figure:
    """A per-run number a scenario reports besides msg/s: its median per system, and each
    other system's median over ours (``faststream/trioworker = 1.3x``), no goal."""

    key: str  # in the scripts' JSON line
    label: str
    unit: str


@dataclass(frozen=True)
class Scenario:
    name: str
    systems: tuple[str, ...]  # ours first: the alternation order
    prefill: bool  # consume scenarios start from a full queue; publish from an empty one
    expect_depth_after: str  # "empty" or "count"
    goal: Goal
    rounds: int | None = None  # None: --rounds
    mode: str | None = None  # the system scripts' mode; None: the scenario's name
    script_args: tuple[str, ...] = ()  # extra arguments for the system scripts
    modes: dict[str, str] | None = None  # per-system mode, over ``mode``
    scripts: dict[str, str] | None = None  # per-system script, over ``SCRIPTS``
    count_option: str = "count"  # the driver option giving the message count
    # Bulk routes: round the count up to whole bulks of this size, so no run ends waiting
    # for the flush interval of a last partial bulk (--exact-count turns it off).
    whole_bulks: int | None = None
    # Systems that are variants of another one run with that one's --python (e.g. two
    # ways of running trioworker); by default a system is its own venv.
    venvs: dict[str, str] | None = None
    ours: str = OURS  # the system the ratios and goals are about
    count: int | None = None  # a fixed message count, over ``count_option``
    rates: bool = True  # False: msg/s mean nothing here (startup); the figures say it all
    figures: tuple[Figure, ...] = ()

    def venv_for(self, system: str) -> str:
        return (self.venvs or {}).get(system) or system

    def mode_for(self, system: str) -> str:
        return (self.modes or {}).get(system) or self.mode or self.name

    def script_for(self, system: str) -> str:
        return (self.scripts or {}).get(system) or SCRIPTS[self.venv_for(system)]


SCENARIOS: dict[str, Scenario] = {
    "consume": Scenario(
        "consume",
        ("trioworker", "aio-pika", "pika"),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(min_rate=30_000, min_ratio={"aio-pika": 5.0}),
    ),
    # The client's publish path: transient messages, so the broker does not fsync and the
    # figure measures the clients, not the disk.
    "publish": Scenario(
        "publish",
        ("trioworker", "aio-pika"),
        prefill=False,
        expect_depth_after="count",
        goal=Goal(min_rate=30_000, min_ratio={"aio-pika": 8.0}),
        script_args=("--delivery-mode", "1"),
    ),
    # The same with persistent messages: bound by the broker's disk path on a shared 2-core
    # machine (every client tops out near the same rate); reported, no goal.
    "publish-persistent": Scenario(
        "publish-persistent",
        ("trioworker", "aio-pika"),
        prefill=False,
        expect_depth_after="count",
        goal=Goal(),
        mode="publish",
        script_args=("--delivery-mode", "2"),
    ),
    "rss": Scenario(
        "rss",
        ("trioworker",),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(max_rss_growth_mb=50.0),
        rounds=1,
        count_option="rss_count",
    ),
    # Worker frameworks. A bulk route (bulk_size=256, flush_interval=1 s) against
    # asyncworker's (bulk_size=256, bulk_flush_interval=1) and aio-pika's client consume
    # with ack(multiple=True) every 256 (the `consume` scenario's script).
    "route-bulk": Scenario(
        "route-bulk",
        ("trioworker", "asyncworker", "aio-pika"),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(min_rate=25_000, min_ratio={"asyncworker": 4.0}),
        modes={"trioworker": "bulk", "asyncworker": "bulk", "aio-pika": "consume"},
        scripts={"trioworker": FRAMEWORK},
        whole_bulks=256,
    ),
    # A per-message route (bulk_size=1, concurrency=1) against FastStream's default
    # subscriber and aio-pika acking every message.
    "route-each": Scenario(
        "route-each",
        ("trioworker", "faststream", "aio-pika"),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(min_rate=12_000, min_ratio={"faststream": 5.0, "aio-pika": 3.0}),
        modes={"trioworker": "each", "faststream": "each", "aio-pika": "consume-each"},
        scripts={"trioworker": FRAMEWORK},
    ),
    # RSS of a bulk route over --rss-count (1,000,000) messages.
    "route-rss": Scenario(
        "route-rss",
        ("trioworker",),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(max_rss_growth_mb=50.0),
        rounds=1,
        mode="bulk-rss",
        scripts={"trioworker": FRAMEWORK},
        count_option="rss_count",
        whole_bulks=256,
    ),
    # Retries (docs/retries.md): the bulk route with retry=Retry(attempts=3, delays=(1,)).
    # route-retry: every message fails once (m.retry()) and succeeds a second later;
    # route-retry-dlq: every message fails three times and is dead-lettered. Ours only.
    "route-retry": Scenario(
        "route-retry",
        ("trioworker",),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(),
        mode="retry",
        scripts={"trioworker": FRAMEWORK},
        whole_bulks=256,
    ),
    "route-retry-dlq": Scenario(
        "route-retry-dlq",
        ("trioworker",),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(),
        mode="retry-dlq",
        scripts={"trioworker": FRAMEWORK},
        whole_bulks=256,
    ),
    # Streams (bench_streams.py): a bulk route on Queue(kind="stream") reading from "first"
    # vs pika's basic_consume with x-stream-offset, acking every 256. Each run makes and
    # fills its own stream (the driver's queue stays empty: a stream has no ready count).
    "stream-consume": Scenario(
        "stream-consume",
        ("trioworker", "pika"),
        prefill=False,
        expect_depth_after="empty",
        goal=Goal(),
        modes={"trioworker": "trioworker", "pika": "pika"},
        scripts={"trioworker": "bench_streams.py", "pika": "bench_streams.py"},
        whole_bulks=256,
    ),
    # RPC round trips on a durable request queue: an App's rpc route called through
    # rpc_client (direct reply-to) vs aio-pika's documented RPC pattern. Each run: p50/p99
    # latency of one caller, then --rpc-count calls by 64 concurrent callers (calls/s).
    "rpc": Scenario(
        "rpc",
        ("trioworker", "aio-pika"),
        prefill=False,
        expect_depth_after="empty",
        goal=Goal(max_p50_ms=1.0, min_ratio={"aio-pika": 3.0}),
        scripts={"trioworker": "bench_rpc.py", "aio-pika": "bench_rpc_aiopika.py"},
        count_option="rpc_count",
    ),
    # Nameko RPC (bench_nameko.py; nameko_peer.py runs real Nameko 2.14.1 in the venv of
    # tests/nameko/venv.py). (a) serve: Nameko's ClusterRpcProxy calls our @app.nameko.rpc
    # vs a Nameko service; (b) call: app.nameko.call vs the proxy, calling that Nameko
    # service (the `nameko` run is the baseline of both). One caller, then 16 concurrent
    # callers sharing 4,000 calls; msg/s, client CPU and p50 of the run lines are (a)'s.
    "nameko-rpc": Scenario(
        "nameko-rpc",
        ("trioworker", "nameko"),
        prefill=False,
        expect_depth_after="empty",
        goal=Goal(),
        modes={"trioworker": "trioworker", "nameko": "nameko"},
        scripts={"trioworker": "bench_nameko.py", "nameko": "bench_nameko.py"},
        venvs={"nameko": OURS},  # the script runs Nameko itself, in its own venv
        count=4000,
        script_args=("--callers", "16", "--seq-calls", "1000"),
        figures=(
            Figure("serve_seq_calls_per_s", "(a) proxy -> server, 1 caller", "calls/s"),
            Figure("serve_conc_p50_ms", "(a) proxy -> server, 16 callers, p50", "ms"),
            Figure("serve_seq_server_cpu_us", "(a) server CPU per call, 1 caller", "us"),
            Figure("serve_conc_server_cpu_us", "(a) server CPU per call, 16 callers", "us"),
            Figure("call_seq_calls_per_s", "(b) caller -> Nameko, 1 caller", "calls/s"),
            Figure("call_seq_p50_ms", "(b) caller -> Nameko, 1 caller, p50", "ms"),
            Figure("call_conc_calls_per_s", "(b) caller -> Nameko, 16 callers", "calls/s"),
            Figure("call_conc_p50_ms", "(b) caller -> Nameko, 16 callers, p50", "ms"),
            Figure("call_seq_caller_cpu_us", "(b) caller CPU per call, 1 caller", "us"),
            Figure("call_conc_caller_cpu_us", "(b) caller CPU per call, 16 callers", "us"),
        ),
    ),
    # The CLI (bench_cli.py: the command measured from outside its process tree).
    # cli-workers: `trioworker run cli_app:app --workers 2` (a supervisor, two workers) vs
    # `--workers 1` on the route-bulk workload; CPU of the whole tree and the supervisor's
    # own. On 2 cores shared with the broker, the broker limits both rates: the point is
    # what the supervisor costs.
    "cli-workers": Scenario(
        "cli-workers",
        ("workers-2", "workers-1"),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(),
        modes={"workers-2": "workers-2", "workers-1": "workers-1"},
        scripts={"workers-2": "bench_cli.py", "workers-1": "bench_cli.py"},
        venvs={"workers-2": OURS, "workers-1": OURS},
        ours="workers-2",
        whole_bulks=256,
        figures=(
            Figure("consume_msg_per_s", "rate while messages flowed", "msg/s"),
            Figure("flow_cpu_us_per_msg", "CPU per message while messages flowed", "us"),
            Figure("start_cpu_ms", "CPU of the processes' start", "ms"),
            Figure("stop_cpu_ms", "CPU of the stop", "ms"),
            Figure("first_handled_s", "first bulk handled after the launch", "s"),
            Figure("supervisor_cpu_ms", "supervisor CPU", "ms"),
            Figure("supervisor_flow_cpu_ms", "supervisor CPU while messages flowed", "ms"),
            Figure("supervisor_rss_mib", "supervisor RSS", "MiB"),
        ),
    ),
    # startup: from launching `trioworker run startup_app:app` / `faststream run
    # startup_faststream_app:app` (one route, one message waiting) to that message handled;
    # then the worker's RSS after 2 s idle. Median of 5 starts each.
    "startup": Scenario(
        "startup",
        ("trioworker", "faststream"),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(),
        rounds=5,
        count=1,
        rates=False,
        modes={"trioworker": "startup-trioworker", "faststream": "startup-faststream"},
        scripts={"trioworker": "bench_cli.py", "faststream": "bench_cli.py"},
        figures=(
            Figure("startup_ms", "launch to first message handled", "ms"),
            Figure("idle_rss_mib", "idle RSS of the worker process", "MiB"),
            Figure("startup_cpu_ms", "CPU until idle", "ms"),
        ),
    ),
    # Pools (docs/pools.md, bench_pools.py): a CPU-bound route (about 2 ms of pure-Python
    # work per message, bulks of 64, concurrency 2) in a process pool of 2 workers, in a
    # thread pool of 2 (the GIL: one runs at a time) and on the event loop; 6,400 messages,
    # so a run takes seconds, not minutes. Plus what the pool costs per bulk (no-op handler).
    "route-pool": Scenario(
        "route-pool",
        ("process", "thread", "loop"),
        prefill=True,
        expect_depth_after="empty",
        goal=Goal(),
        modes={"process": "process", "thread": "thread", "loop": "loop"},
        scripts={"process": "bench_pools.py", "thread": "bench_pools.py", "loop": "bench_pools.py"},
        venvs={"process": OURS, "thread": OURS, "loop": OURS},
        ours="process",
        count=6400,
        script_args=("--bulk-size", "64"),
        figures=(
            Figure("hop_us_per_bulk", "pool cost per bulk of 64 (no-op handler)", "us"),
            Figure("parent_cpu_us_per_msg", "app process CPU per message", "us"),
            Figure("work_ms", "one message's work", "ms"),
        ),
    ),
    # WebSocket echo (bench_websocket.py; no broker: the driver's queue stays unused): an
    # @app.http.websocket route vs hypercorn serving a raw ASGI echo app (websocket_peer.py),
    # each server in its own process, the websockets client in the script's. --ws-count
    # 64-byte text messages sent by 1 client, then shared by 100 (one in flight each).
    # msg/s of the run lines are the 100 clients'; "client CPU" is the load process's.
    "websocket-echo": Scenario(
        "websocket-echo",
        ("trioworker", "hypercorn"),
        prefill=False,
        expect_depth_after="empty",
        goal=Goal(),
        modes={"trioworker": "trioworker", "hypercorn": "hypercorn"},
        scripts={"trioworker": "bench_websocket.py", "hypercorn": "bench_websocket.py"},
        venvs={"hypercorn": OURS},  # the same hypercorn, from our venv
        count_option="ws_count",
        script_args=("--clients", "100", "--size", "64"),
        figures=(
            Figure("one_msg_per_s", "1 client", "msg/s"),
            Figure("conc_p50_ms", "100 clients, p50 round trip", "ms"),
            Figure("conc_p99_ms", "100 clients, p99 round trip", "ms"),
            Figure("one_server_cpu_us", "server CPU per message, 1 client", "us"),
            Figure("conc_server_cpu_us", "server CPU per message, 100 clients", "us"),
            Figure("one_server_rss_mib", "server RSS, 1 socket open", "MiB"),
            Figure("conc_server_rss_mib", "server RSS, 100 sockets open", "MiB"),
        ),
    ),
    # A RabbitMQ cluster (bench_cluster.py, docs/cluster.md). The script starts a private
    # 3-node cluster (tests/support/cluster.py's) and stops it; the shared broker only holds
    # the driver's empty queue. One driver round; inside it, alternating, --rounds 3 of:
    # the route-bulk route consuming --count prefilled messages from a quorum queue vs a
    # classic queue on one node (msg/s of the run line: the median quorum run). Then 6
    # kill -9s of the node a worker is on (3 leading the queue, 3 not), each timed to the
    # first message the worker handles on a surviving node.
    "cluster": Scenario(
        "cluster",
        ("trioworker",),
        prefill=False,
        expect_depth_after="empty",
        goal=Goal(),
        rounds=1,
        scripts={"trioworker": "bench_cluster.py"},
        whole_bulks=256,
        script_args=("--rounds", "3", "--kills", "6"),
        figures=(
            Figure("quorum_msg_per_s", "quorum queue, 3 nodes", "msg/s"),
            Figure("classic_msg_per_s", "classic queue, 1 node", "msg/s"),
            Figure("quorum_vs_classic", "quorum/classic rate", "x"),
            Figure("quorum_cpu_us", "client CPU per message, quorum", "us"),
            Figure("classic_cpu_us", "client CPU per message, classic", "us"),
            Figure("quorum_cluster_cpu_us", "broker CPU per message (3 nodes), quorum", "us"),
            Figure("classic_cluster_cpu_us", "broker CPU per message (3 nodes), classic", "us"),
            Figure("quorum_cluster_faults", "broker page faults per run, quorum", "faults"),
            Figure("classic_cluster_faults", "broker page faults per run, classic", "faults"),
            Figure("failover_p50_ms", "node kill to first message on a survivor, p50", "ms"),
            Figure("failover_max_ms", "node kill to first message on a survivor, max", "ms"),
            Figure("failover_leader_p50_ms", "... when the node led the queue, p50", "ms"),
            Figure("failover_not_leader_p50_ms", "... when it did not, p50", "ms"),
        ),
    ),
}


class BenchError(RuntimeError):
    pass


class BrokerProbe:
    """CPU time and minor page faults of the local broker's Erlang VM, from ``/proc``.

    Why: on a shared 2-core machine a consume figure can be the broker's limit, not the
    client's. When the VM's CPU over a run is about one core for the whole run, its queue
    process (one Erlang process per queue) is the bottleneck; and that VM can be in a mode
    where it maps fresh memory for the queue process's heap again and again (ten times the
    page faults, twice the CPU for the same work). Recording both per run shows which side a
    figure measures. Without a readable local ``beam.smp`` the probe reports nothing.
    """

    def __init__(self) -> None:
        self.pid = self._find()
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _find() -> int | None:
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii", errors="replace") as f:
                    if f.read().strip() == "beam.smp":
                        return int(entry)
            except OSError:
                continue
        return None

    def sample(self) -> tuple[float, int] | None:
        """(CPU seconds, minor faults) so far, or None when the broker is not visible."""
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
                # Fields after the ")" that closes the command name: state is field 3.
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            self.pid = self._find()  # the broker restarted
            return None
        minflt, utime, stime = int(fields[7]), int(fields[11]), int(fields[12])
        return (utime + stime) / self.ticks, minflt


def run_json(cmd: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a helper/system script and parse the JSON object on the last line of its stdout.

    Whatever the script wrote on stderr is kept under the key ``"stderr"`` (when not empty).
    """
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, cwd=HERE, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"exit {proc.returncode}: {' '.join(cmd)}\n{tail}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"no output: {' '.join(cmd)}")
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise BenchError(f"bad JSON from {' '.join(cmd)}: {lines[-1]!r}") from exc
    if not isinstance(data, dict):
        raise BenchError(f"bad JSON from {' '.join(cmd)}: {lines[-1]!r}")
    if proc.stderr.strip():
        data["stderr"] = proc.stderr.strip()[-2000:]
    return data


class Driver:
    def __init__(self, args: argparse.Namespace, pythons: dict[str, str]) -> None:
        self.args = args
        self.pythons = pythons
        self.fill_script = str(HERE / "fill.py")
        self.broker = BrokerProbe()

    def helper(self, *argv: str, python: str | None = None, timeout: float = 60.0) -> Any:
        py = python or self.pythons[ADMIN]
        return run_json([py, self.fill_script, *argv, "--url", self.args.url], timeout)

    def depth(self, queue: str) -> int:
        return int(self.helper("depth", queue)["messages"])

    def prepare(self, queue: str, count: int, prefill: bool) -> float:
        self.helper("reset", queue)
        if not prefill:
            return 0.0
        client = self.args.fill_with
        timeout = max(120.0, count / 2_000)
        argv = ("fill", queue, str(count), "--client", client)
        out = self.helper(*argv, python=self.pythons[client], timeout=timeout)
        have = self.depth(queue)
        if have != count:
            raise BenchError(f"fill left {have} messages in {queue!r}, expected {count}")
        return float(out["seconds"])

    def run_once(self, scenario: Scenario, system: str, count: int) -> dict[str, Any]:
        queue = f"{self.args.queue_prefix}-{scenario.name}"
        fill_seconds = self.prepare(queue, count, scenario.prefill)
        time.sleep(self.args.settle)
        mode = scenario.mode_for(system)
        script = scenario.script_for(system)
        python = self.pythons[scenario.venv_for(system)]
        cmd = [python, str(HERE / script), mode, queue, str(count)]
        cmd += ["--url", self.args.url, *scenario.script_args]
        load = os.getloadavg()[0]
        before = self.broker.sample()
        result = run_json(cmd, self.args.timeout)
        after = self.broker.sample()
        if before is not None and after is not None:
            result["broker_cpu_seconds"] = round(after[0] - before[0], 2)
            result["broker_minor_faults"] = after[1] - before[1]
        expected = 0 if scenario.expect_depth_after == "empty" else count
        left = self.depth(queue)
        if int(result.get("messages", -1)) != count:
            raise BenchError(f"{system} reported {result.get('messages')} messages, not {count}")
        if left != expected:
            raise BenchError(f"{system} left {left} messages in {queue!r}, expected {expected}")
        result["fill_seconds"] = fill_seconds
        result["loadavg_before"] = round(load, 2)
        return result

    def count_for(self, scenario: Scenario) -> int:
        if scenario.count is not None:
            return scenario.count
        count = int(getattr(self.args, scenario.count_option))
        size = scenario.whole_bulks
        if size and not self.args.exact_count and count % size:
            whole = math.ceil(count / size) * size
            print(
                f"[{scenario.name}] {whole:,} messages: {count:,} rounded up to whole bulks "
                f"of {size} (--exact-count: keep {count:,}; the last bulk then waits for "
                "the flush interval)",
                flush=True,
            )
            count = whole
        return count

    def run_scenario(self, scenario: Scenario) -> dict[str, Any]:
        count = self.count_for(scenario)
        rounds = scenario.rounds or self.args.rounds
        systems = [s for s in scenario.systems if scenario.venv_for(s) in self.pythons]
        skipped = [s for s in scenario.systems if s not in systems]
        if skipped:
            print(f"[{scenario.name}] skipping (no --python given): {', '.join(skipped)}")
        if not systems:
            return {"scenario": scenario.name, "count": count, "runs": {}, "errors": {}}
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        errors: dict[str, list[str]] = {s: [] for s in systems}
        for rnd in range(1, rounds + 1):
            for system in systems:
                tag = f"[{scenario.name} {rnd}/{rounds}] {system}"
                try:
                    result = self.run_once(scenario, system, count)
                except BenchError as exc:
                    errors[system].append(str(exc))
                    print(f"{tag}: FAILED: {exc}", flush=True)
                    continue
                runs[system].append(result)
                line = f"{tag}: {result['msg_per_s']:,.0f} msg/s in {result['seconds']:.2f}s"
                if not scenario.rates:
                    line = f"{tag}: {result['seconds']:.2f}s"
                if "handled_s" in result:  # frameworks: the rest is the graceful shutdown
                    line += f" (last message handled at {result['handled_s']:.2f}s)"
                if "rss_growth_mb" in result:
                    line += f", RSS growth {result['rss_growth_mb']:+.1f} MB"
                line += cost_note(result)
                if "p50_ms" in result:  # rpc: msg/s are calls/s of the concurrent callers
                    line += (
                        f"; 1 caller p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                    )
                if "note" in result:  # the script's own summary of the run
                    line += f"; {result['note']}"
                if "stderr" in result:  # e.g. the broker blocked publishers meanwhile
                    line += f"  [stderr: {result['stderr'].splitlines()[-1][:120]}]"
                print(line, flush=True)
        self.helper("delete", f"{self.args.queue_prefix}-{scenario.name}")
        return {"scenario": scenario.name, "count": count, "runs": runs, "errors": errors}


def cost_note(result: dict[str, Any]) -> str:
    """``; client CPU 9.8 us/msg; broker 1.3 s CPU, 12k faults`` for one run's line."""
    note = ""
    if "cpu_us_per_msg" in result:
        note += f"; client CPU {result['cpu_us_per_msg']:.1f} us/msg"
    if "broker_cpu_seconds" in result:
        faults = result["broker_minor_faults"] / 1000
        note += f"; broker {result['broker_cpu_seconds']:.2f} s CPU, {faults:,.0f}k page faults"
    return note


def summarize(scenario: Scenario, data: dict[str, Any]) -> tuple[list[str], bool]:
    """Summary lines for one scenario, and whether every goal was met."""
    us = scenario.ours
    lines: list[str] = []
    ok = True
    medians: dict[str, float] = {}
    for system, runs in data["runs"].items():
        rates = [float(r["msg_per_s"]) for r in runs]
        nerr = len(data["errors"][system])
        if not rates:
            lines.append(f"{scenario.name} {system}: FAILED ({nerr} of {nerr} runs)")
            ok = ok and system != us
            continue
        medians[system] = statistics.median(rates)
        if not scenario.rates:
            continue
        listed = ", ".join(f"{r:,.0f}" for r in rates)
        failed = f"; {nerr} failed" if nerr else ""
        median = medians[system]
        lines.append(
            f"{scenario.name} {system}: median {median:,.0f} msg/s (runs: {listed}{failed})"
        )
    data["median_msg_per_s"] = medians
    goal = scenario.goal
    ours = medians.get(us)
    ratios: dict[str, float] = {}
    for peer in scenario.systems if scenario.rates else ():
        if peer == us or ours is None or peer not in medians or medians[peer] <= 0:
            continue
        ratio = ours / medians[peer]
        ratios[peer] = ratio
        want = (goal.min_ratio or {}).get(peer)
        verdict = ""
        if want is not None:
            met = ratio >= want
            ok = ok and met
            verdict = f"  (goal >= {want:g}x: {'MET' if met else 'NOT MET'})"
        lines.append(f"ratio {us}/{peer} = {ratio:.1f}x{verdict}")
    data["ratios"] = ratios
    lines += cpu_lines(data, us)
    lines += figure_lines(scenario, data)
    for peer in goal.min_ratio or {}:
        if peer not in ratios:
            ok = False
            lines.append(f"ratio {us}/{peer}: no figures (goal NOT CHECKED)")
    if goal.min_rate is not None and ours is not None:
        met = ours >= goal.min_rate
        ok = ok and met
        lines.append(
            f"{scenario.name} {us} rate goal >= {goal.min_rate:,.0f} msg/s: "
            f"{'MET' if met else 'NOT MET'}"
        )
    if goal.max_rss_growth_mb is not None:
        for r in data["runs"].get(us, []):
            growth = float(r["rss_growth_mb"])
            met = growth < goal.max_rss_growth_mb
            ok = ok and met
            lines.append(
                f"{scenario.name} {us}: growth {growth:+.1f} MB over {r['messages']:,} "
                "messages "
                f"(after warm-up {r['rss_warm_mb']:.1f} MB -> end {r['rss_end_mb']:.1f} MB; "
                f"goal < {goal.max_rss_growth_mb:g} MB: {'MET' if met else 'NOT MET'})"
            )
    latency = {
        system: (
            statistics.median(float(r["p50_ms"]) for r in runs),
            statistics.median(float(r["p99_ms"]) for r in runs),
        )
        for system, runs in data["runs"].items()
        if runs and all("p50_ms" in r for r in runs)
    }
    if latency:
        data["median_latency_ms"] = latency
        callers = max(int(r.get("callers", 0)) for rs in data["runs"].values() for r in rs)
        lines.append(f"{scenario.name}: msg/s above are calls/s with {callers} concurrent callers")
        for system, (p50, p99) in latency.items():
            lines.append(f"{scenario.name} {system}: 1 caller p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        if us in latency:
            for system, (p50, p99) in latency.items():
                if system != us:
                    lines.append(
                        f"latency {system}/{us}: p50 {p50 / latency[us][0]:.1f}x, "
                        f"p99 {p99 / latency[us][1]:.1f}x"
                    )
    if goal.max_p50_ms is not None:
        met = us in latency and latency[us][0] <= goal.max_p50_ms
        ok = ok and met
        lines.append(
            f"{scenario.name} {us} p50 goal <= {goal.max_p50_ms:g} ms: "
            f"{'MET' if met else 'NOT MET'}"
        )
    if ours is None and us in scenario.systems:
        ok = False
    return lines, ok


def cpu_lines(data: dict[str, Any], ours: str = OURS) -> list[str]:
    """Median client CPU per message, and how many times more each peer spends (no goal)."""
    cost: dict[str, float] = {}
    for system, runs in data["runs"].items():
        values = [float(r["cpu_us_per_msg"]) for r in runs if "cpu_us_per_msg" in r]
        if values:
            cost[system] = statistics.median(values)
    data["median_cpu_us_per_msg"] = cost
    if ours not in cost or len(cost) < 2:
        return []
    listed = ", ".join(f"{system} {us:.1f}" for system, us in cost.items())
    lines = [f"client CPU per message, median us: {listed}"]
    for system, us in cost.items():
        if system != ours and cost[ours] > 0:
            lines.append(f"client CPU {system}/{ours} = {us / cost[ours]:.1f}x (no goal)")
    return lines


def figure_lines(scenario: Scenario, data: dict[str, Any]) -> list[str]:
    """The median of each of the scenario's figures per system, and the ratio to ours."""
    lines: list[str] = []
    data["median_figures"] = {}
    for figure in scenario.figures:
        medians: dict[str, float] = {}
        for system, runs in data["runs"].items():
            values = [float(r[figure.key]) for r in runs if figure.key in r]
            if values:
                medians[system] = statistics.median(values)
        if not medians:
            continue
        data["median_figures"][figure.key] = medians
        listed = ", ".join(f"{system} {v:,.1f}" for system, v in medians.items())
        line = f"{scenario.name} {figure.label}, median {figure.unit}: {listed}"
        ours = medians.get(scenario.ours)
        if ours:
            line += "".join(
                f"; {system}/{scenario.ours} = {v / ours:.2f}x"
                for system, v in medians.items()
                if system != scenario.ours
            )
        lines.append(line)
    return lines


def parse_pythons(items: list[str]) -> dict[str, str]:
    pythons: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in SCRIPTS:
            raise SystemExit(f"--python wants SYSTEM=PATH with SYSTEM in {sorted(SCRIPTS)}")
        # Absolute (scripts run with cwd=benchmarks/), but not resolved: a venv's python is
        # a symlink to the base interpreter, and resolving it would leave the venv.
        pythons[name] = os.path.abspath(path)
    if ADMIN not in pythons:
        raise SystemExit(f"--python {ADMIN}=PATH is required (queue reset/depth use pika)")
    return pythons


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"{', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument(
        "--python", action="append", default=[], metavar="SYSTEM=PATH", help="per system"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rss-count", type=int, default=1_000_000)
    parser.add_argument("--rpc-count", type=int, default=20_000, help="rpc: calls by 64 callers")
    parser.add_argument(
        "--ws-count", type=int, default=20_000, help="websocket-echo: messages per phase"
    )
    parser.add_argument(
        "--exact-count",
        action="store_true",
        help="bulk routes: do not round the count up to whole bulks",
    )
    parser.add_argument("--fill-with", choices=("pika", "trioworker"), default="pika")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--queue-prefix", default="trioworker-bench")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after fill, seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="per script run, seconds")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every goal is met")
    args = parser.parse_args(argv)
    pythons = parse_pythons(args.python)
    if args.fill_with not in pythons:
        parser.error(f"--fill-with {args.fill_with} needs --python {args.fill_with}=PATH")
    names: list[str] = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")

    load = os.getloadavg()
    print(
        f"workload: durable queue, {args.count:,} x 256-byte JSON ({args.rss_count:,} for rss), "
        f"prefetch 1024, ack multiple every 256, confirm window 1000, bulk routes 256 / 1 s; "
        f"rounds {args.rounds}; fill with {args.fill_with}; loadavg {load[0]:.2f}",
        flush=True,
    )
    if load[0] > 0.5:
        print("warning: the machine is busy (loadavg > 0.5): figures will be noisy", flush=True)

    driver = Driver(args, pythons)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_start": load,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scenarios": {},
    }
    summary: list[str] = []
    all_ok = True
    for name in names:
        scenario = SCENARIOS[name]
        data = driver.run_scenario(scenario)
        lines, ok = summarize(scenario, data)
        all_ok = all_ok and ok
        report["scenarios"][name] = data
        summary += lines

    print()
    for line in summary:
        print(line)
    report["all_goals_met"] = all_ok
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out}")
    return 1 if args.check and not all_ok else 0


if __name__ == "__main__":
    sys.exit(main())
