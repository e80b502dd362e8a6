"""Nameko RPC benchmark (``nameko-rpc``): trioworker as a Nameko service and as a Nameko caller.

Run from the trioworker virtualenv (the Nameko side runs in the Nameko venv, built on
first use by ``tests/nameko/venv.py``, the interop tests' own):
    python benchmarks/bench_nameko.py trioworker|nameko QUEUE COUNT [--callers 16]
        [--seq-calls 1000] [--warmup-calls 100]
Prints one JSON line (see ``_common.Result``). QUEUE is the driver's and stays unused:
Nameko names its own queues.

Every run starts a real Nameko 2.14.1 service, ``nameko run nameko_peer`` (Nameko's
defaults: ``max_workers`` 10), with a fresh name, and waits until it consumes
``rpc-{name}``. Every call is ``echo(payload)`` with the 256-byte JSON object of the other
benchmarks, whose result is the payload; each phase is 100 warm-up calls, then
``--seq-calls`` calls one after the other (``seq``), then COUNT calls shared by
``--callers`` concurrent callers (``conc``). Per phase: calls/s, p50/p99 latency, the CPU
per call of the caller process and of the server process (read from the server's ``cpu``
method before and after the phase).

- ``trioworker``: (a) *serve* — an :class:`trioworker.App` named like a Nameko service,
  with ``@app.nameko.rpc`` methods ``echo`` and ``cpu`` (defaults: 64 requests at once),
  called by Nameko's ``ClusterRpcProxy`` (``nameko_peer.py``, one proxy per eventlet green
  thread); then (b) *call* — another app (no methods) calls the Nameko service with
  ``app.nameko.call`` from one task, then from ``--callers`` trio tasks (one reply queue).
- ``nameko``: Nameko's ``ClusterRpcProxy`` calls the Nameko service — the baseline of both
  comparisons (the same server as (b), the same caller as (a)), measured once and reported
  under both prefixes.

The JSON line: ``serve_*`` and ``call_*`` per phase (``seq_calls_per_s``, ``conc_p50_ms``,
``conc_caller_cpu_us``, ``conc_server_cpu_us``, ...). The driver's own fields are those of
(a) with concurrent callers — ``msg_per_s`` its calls/s, ``cpu_us_per_msg`` its caller's
CPU per call (Nameko's proxy for both systems) — and ``p50_ms``/``p99_ms`` of (a) with one
caller.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio
from _common import BODY, Result, cpu, now, parse_args, rss_mb

from trioworker import App, open_app
from trioworker.amqp import AMQPError, NotFoundError, connect

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the interop tests' venv builder, shared
from tests.nameko.venv import ensure_venv  # noqa: E402

PAYLOAD = json.loads(BODY)
#: ``nameko run``'s start (eventlet, kombu, declaring its queue) on a busy machine.
STARTUP_TIMEOUT = 60.0
#: One call that gets no reply within this fails the run (a lost reply, not a slow one).
CALL_TIMEOUT = 60.0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank (as bench_rpc.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def phase(
    name: str, calls: int, seconds: float, latencies: list[float], caller: float, server: float
) -> dict[str, float]:
    """One phase's figures, under the keys ``nameko_peer.py`` uses."""
    return {
        f"{name}_calls": calls,
        f"{name}_seconds": round(seconds, 4),
        f"{name}_calls_per_s": round(calls / seconds, 1),
        f"{name}_p50_ms": round(statistics.median(latencies) * 1000, 3),
        f"{name}_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        f"{name}_caller_cpu_us": round(caller / calls * 1e6, 1),
        f"{name}_server_cpu_us": round(server / calls * 1e6, 1),
    }


async def wait_consumed(url: str, queue: str, service: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``queue`` exists and has a consumer: the server is up."""
    with trio.fail_after(STARTUP_TIMEOUT):
        async with connect(url) as conn:
            while True:
                if service.poll() is not None:
                    tail = (await trio.Path(log).read_text())[-3000:]
                    raise RuntimeError(f"nameko run exited:\n{tail}")
                try:
                    async with conn.channel() as channel:
                        if (await channel.queue_declare(queue, passive=True)).consumer_count:
                            return
                except NotFoundError:
                    pass
                await trio.sleep(0.1)


async def proxy_calls(python: Path, service: str, args: Any) -> dict[str, Any]:
    """Nameko's ClusterRpcProxy calling ``service`` (``nameko_peer.py``, the Nameko venv)."""
    argv = [str(python), str(HERE / "nameko_peer.py"), service, "--url", args.url]
    argv += ["--payload", BODY.decode(), "--seq-calls", str(args.seq_calls)]
    argv += ["--calls", str(args.count), "--callers", str(args.callers)]
    argv += ["--warmup", str(args.warmup_calls)]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Nameko caller failed:\n{done.stderr.decode()[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return out


async def serve(python: Path, name: str, args: Any, service: Any, log: Path) -> dict[str, Any]:
    """(a): our ``@app.nameko.rpc`` methods, called by Nameko's proxy."""
    app = App(amqp_url=args.url, name=name)

    @app.nameko.rpc
    async def echo(payload: Any) -> Any:
        return payload

    @app.nameko.rpc(name="cpu")
    async def cpu_seconds() -> float:
        return cpu()

    async with open_app(app):
        await wait_consumed(args.url, f"rpc-{name}", service, log)
        return await proxy_calls(python, name, args)


async def call(name: str, nameko: str, args: Any, queues: list[str]) -> dict[str, Any]:
    """(b): ``app.nameko.call`` calling the Nameko service (its reply queue goes to
    ``queues``, for the clean-up)."""
    app = App(amqp_url=args.url, name=name)
    queues.append(app.nameko.reply_queue)
    out: dict[str, Any] = {}
    wrong = 0

    async def echo() -> None:
        nonlocal wrong
        if await app.nameko.call(nameko, "echo", PAYLOAD, timeout=CALL_TIMEOUT) != PAYLOAD:
            wrong += 1

    async def server_cpu() -> float:
        return float(await app.nameko.call(nameko, "cpu", timeout=CALL_TIMEOUT))

    async with open_app(app):
        for _ in range(args.warmup_calls):
            await echo()

        latencies: list[float] = []
        server0, cpu0, start = await server_cpu(), cpu(), now()
        for _ in range(args.seq_calls):
            t0 = now()
            await echo()
            latencies.append(now() - t0)
        seconds, caller = now() - start, cpu() - cpu0
        server = await server_cpu() - server0
        out.update(phase("seq", args.seq_calls, seconds, latencies, caller, server))

        latencies = []
        remaining = args.count

        async def caller_task() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = now()
                await echo()
                latencies.append(now() - t0)

        server0, cpu0, start = await server_cpu(), cpu(), now()
        async with trio.open_nursery() as nursery:
            for _ in range(args.callers):
                nursery.start_soon(caller_task)
        seconds, caller = now() - start, cpu() - cpu0
        server = await server_cpu() - server0
        out.update(phase("conc", args.count, seconds, latencies, caller, server))
    if wrong:
        raise RuntimeError(f"{wrong} wrong replies")
    return out


async def run(
    args: Any, python: Path, nameko: str, ours: str, service: Any, log: Path, queues: list[str]
) -> Result:
    await wait_consumed(args.url, f"rpc-{nameko}", service, log)
    rss_start = rss_mb()
    if args.mode == "nameko":
        baseline = await proxy_calls(python, nameko, args)
        served, called = baseline, baseline
    else:
        served = await serve(python, ours, args, service, log)
        called = await call(ours, nameko, args, queues)
    phases = ("seq_", "conc_")
    extra: dict[str, Any] = {f"serve_{k}": v for k, v in served.items() if k.startswith(phases)}
    extra.update({f"call_{k}": v for k, v in called.items() if k.startswith(phases)})
    extra.update(
        callers=args.callers,
        latency_calls=args.seq_calls,
        p50_ms=served["seq_p50_ms"],
        p99_ms=served["seq_p99_ms"],
        nameko_version=served["nameko_version"],
        note=(  # the driver's run line gives (a) 16 callers and (a) p50; the rest here
            f"(a) 1 caller {served['seq_calls_per_s']:,.0f} calls/s, server CPU "
            f"{served['seq_server_cpu_us']:.0f}/{served['conc_server_cpu_us']:.0f} us/call; "
            f"(b) {called['seq_calls_per_s']:,.0f} / {called['conc_calls_per_s']:,.0f} "
            f"calls/s, p50 {called['seq_p50_ms']:.2f} / {called['conc_p50_ms']:.2f} ms, "
            f"caller CPU {called['seq_caller_cpu_us']:.0f} / "
            f"{called['conc_caller_cpu_us']:.0f} us/call (1 / {args.callers} callers)"
        ),
    )
    return Result(
        system=args.mode,
        version=version("trioworker") if args.mode == "trioworker" else served["nameko_version"],
        scenario="nameko-rpc",
        messages=args.count,
        seconds=served["conc_seconds"],
        cpu_seconds=served["conc_caller_cpu_us"] * args.count / 1e6,
        rss_start_mb=rss_start,
        rss_end_mb=rss_mb(),
        extra=extra,
    )


async def delete(url: str, queues: list[str]) -> None:
    with trio.move_on_after(20):
        async with connect(url) as conn:
            for queue in queues:
                try:
                    async with conn.channel() as channel:
                        await channel.queue_delete(queue)
                except AMQPError:
                    pass


def configure(parser: Any) -> None:
    parser.add_argument("--callers", type=int, default=16, help="concurrent callers (conc)")
    parser.add_argument("--seq-calls", type=int, default=1000, help="sequential calls (seq)")
    parser.add_argument("--warmup-calls", type=int, default=100, help="calls before each phase")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], ("trioworker", "nameko"), configure)
    python = ensure_venv()
    token = secrets.token_hex(3)
    nameko, ours = f"nkbench{token}", f"twbench{token}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "nameko.log"
        with open(log, "wb") as out:
            service = subprocess.Popen(
                [str(python), "-m", "nameko", "run", "nameko_peer", "--broker", args.url],
                cwd=HERE,
                env={**os.environ, "NK_SERVICE": nameko},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Every queue a run declares goes at the end, failed runs included (our reply
        # queue would otherwise linger for its 5-minute x-expires, rpc-* for ever).
        queues = [f"rpc-{nameko}", f"rpc-{ours}"]
        try:
            result = trio.run(run, args, python, nameko, ours, service, log, queues)
        finally:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)  # nameko run stops gracefully on it
                try:
                    service.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    service.kill()
                    service.wait()
            trio.run(delete, args.url, queues)
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
