"""Benchmark driver: runs every system in the same run, alternating, and prints medians + ratios.

Stdlib only. Each system runs as a subprocess with the interpreter of its own virtualenv:

    python benchmarks/run.py --python trioworker=.nox/bench/bin/python \\
        --python aio-pika=.nox/bench-peers/aio-pika/bin/python \\
        --python pika=.nox/bench-peers/pika/bin/python  [consume] [publish] [rss]

For each scenario and each round, for each system in turn (ours, peer, ours, peer, ...):
reset the durable queue (delete + declare), pre-fill it when the scenario consumes, run the
system's script, then check the queue depth it left. Usually run through ``nox -s bench``.
"""

from __future__ import annotations

import argparse
import json
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
SCRIPTS = {
    "trioworker": "bench_trioworker.py",
    "aio-pika": "bench_aiopika.py",
    "pika": "bench_pika.py",
}
ADMIN = "pika"  # reset / depth / delete always go through pika: independent of our client


@dataclass(frozen=True)
class Goal:
    min_rate: float | None = None  # ours, msg/s
    min_ratio: dict[str, float] | None = None  # ours / peer
    max_rss_growth_mb: float | None = None


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
    ),
}


class BenchError(RuntimeError):
    pass


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
        mode = scenario.mode or scenario.name
        cmd = [self.pythons[system], str(HERE / SCRIPTS[system]), mode, queue, str(count)]
        cmd += ["--url", self.args.url, *scenario.script_args]
        load = os.getloadavg()[0]
        result = run_json(cmd, self.args.timeout)
        expected = 0 if scenario.expect_depth_after == "empty" else count
        left = self.depth(queue)
        if int(result.get("messages", -1)) != count:
            raise BenchError(f"{system} reported {result.get('messages')} messages, not {count}")
        if left != expected:
            raise BenchError(f"{system} left {left} messages in {queue!r}, expected {expected}")
        result["fill_seconds"] = fill_seconds
        result["loadavg_before"] = round(load, 2)
        return result

    def run_scenario(self, scenario: Scenario) -> dict[str, Any]:
        count = self.args.rss_count if scenario.name == "rss" else self.args.count
        rounds = scenario.rounds or self.args.rounds
        systems = [s for s in scenario.systems if s in self.pythons]
        skipped = [s for s in scenario.systems if s not in self.pythons]
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
                if "rss_growth_mb" in result:
                    line += f", RSS growth {result['rss_growth_mb']:+.1f} MB"
                if "stderr" in result:  # e.g. the broker blocked publishers meanwhile
                    line += f"  [stderr: {result['stderr'].splitlines()[-1][:120]}]"
                print(line, flush=True)
        self.helper("delete", f"{self.args.queue_prefix}-{scenario.name}")
        return {"scenario": scenario.name, "count": count, "runs": runs, "errors": errors}


def summarize(scenario: Scenario, data: dict[str, Any]) -> tuple[list[str], bool]:
    """Summary lines for one scenario, and whether every goal was met."""
    lines: list[str] = []
    ok = True
    medians: dict[str, float] = {}
    for system, runs in data["runs"].items():
        rates = [float(r["msg_per_s"]) for r in runs]
        nerr = len(data["errors"][system])
        if not rates:
            lines.append(f"{scenario.name} {system}: FAILED ({nerr} of {nerr} runs)")
            ok = ok and system != OURS
            continue
        medians[system] = statistics.median(rates)
        listed = ", ".join(f"{r:,.0f}" for r in rates)
        failed = f"; {nerr} failed" if nerr else ""
        median = medians[system]
        lines.append(
            f"{scenario.name} {system}: median {median:,.0f} msg/s (runs: {listed}{failed})"
        )
    data["median_msg_per_s"] = medians
    goal = scenario.goal
    ours = medians.get(OURS)
    ratios: dict[str, float] = {}
    for peer in scenario.systems:
        if peer == OURS or ours is None or peer not in medians or medians[peer] <= 0:
            continue
        ratio = ours / medians[peer]
        ratios[peer] = ratio
        want = (goal.min_ratio or {}).get(peer)
        verdict = ""
        if want is not None:
            met = ratio >= want
            ok = ok and met
            verdict = f"  (goal >= {want:g}x: {'MET' if met else 'NOT MET'})"
        lines.append(f"ratio {OURS}/{peer} = {ratio:.1f}x{verdict}")
    data["ratios"] = ratios
    for peer in goal.min_ratio or {}:
        if peer not in ratios:
            ok = False
            lines.append(f"ratio {OURS}/{peer}: no figures (goal NOT CHECKED)")
    if goal.min_rate is not None and ours is not None:
        met = ours >= goal.min_rate
        ok = ok and met
        lines.append(
            f"{scenario.name} {OURS} rate goal >= {goal.min_rate:,.0f} msg/s: "
            f"{'MET' if met else 'NOT MET'}"
        )
    if goal.max_rss_growth_mb is not None:
        for r in data["runs"].get(OURS, []):
            growth = float(r["rss_growth_mb"])
            met = growth < goal.max_rss_growth_mb
            ok = ok and met
            lines.append(
                f"rss {OURS}: growth {growth:+.1f} MB over {r['messages']:,} messages "
                f"(after warm-up {r['rss_warm_mb']:.1f} MB -> end {r['rss_end_mb']:.1f} MB; "
                f"goal < {goal.max_rss_growth_mb:g} MB: {'MET' if met else 'NOT MET'})"
            )
    if ours is None and OURS in scenario.systems:
        ok = False
    return lines, ok


def parse_pythons(items: list[str]) -> dict[str, str]:
    pythons: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in SCRIPTS:
            raise SystemExit(f"--python wants SYSTEM=PATH with SYSTEM in {sorted(SCRIPTS)}")
        pythons[name] = path
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
        f"prefetch 1024, ack multiple every 256, confirm window 1000; rounds {args.rounds}; "
        f"fill with {args.fill_with}; loadavg {load[0]:.2f}",
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
