"""The Nameko 2.14.1 side of the ``nameko-rpc`` benchmark: a service and a caller.

Runs with the Nameko venv's interpreter (``tests/nameko/venv.py`` builds it), never ours:
Nameko needs eventlet, which monkey-patches the standard library. ``bench_nameko.py`` runs
this module two ways:

- ``nameko run nameko_peer --broker URL`` (``NK_SERVICE`` names the service): a plain
  Nameko service with Nameko's defaults (``max_workers`` 10) and two methods, ``echo``
  (returns its argument) and ``cpu`` (the process's CPU seconds so far, so a caller can
  take the server's CPU per call over a phase);
- ``python nameko_peer.py SERVICE --url URL ...``: the caller. Nameko's
  ``ClusterRpcProxy`` calls ``SERVICE.echo(payload)`` — on a Nameko service or on a
  trioworker app, whichever serves ``rpc-SERVICE`` — first one call after another, then
  from ``--callers`` eventlet green threads at once. A standalone proxy is single-threaded
  (one blocking reply consumer per proxy: two green threads waiting on one connection is
  an eventlet error), so each green thread has its own, as an eventlet program would.
  Prints one JSON line: per phase, calls/s, p50/p99 latency, this process's CPU per call
  and the server's (from its ``cpu`` method).

It imports nothing from the benchmarks (stdlib, eventlet and Nameko only): the payload is
passed in as JSON.
"""

import eventlet

eventlet.monkey_patch()  # before anything opens a socket (``nameko run`` does it too)

import argparse  # noqa: E402 - after the monkey-patching, as eventlet wants
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402

from kombu import Connection  # noqa: E402
from nameko.rpc import rpc  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

#: A call that gets no reply within this many seconds fails the run (a lost reply, not a
#: slow one: round trips here take milliseconds).
CALL_TIMEOUT = 60


class Bench:
    name = os.environ.get("NK_SERVICE", "nameko_bench")

    @rpc
    def echo(self, payload):
        return payload

    @rpc
    def cpu(self):
        return time.process_time()


def percentile(values, q):
    """The ``q``-quantile (0..1) of ``values``, nearest rank (as bench_rpc.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def phase(name, calls, seconds, latencies, caller_cpu, server_cpu):
    return {
        f"{name}_calls": calls,
        f"{name}_seconds": round(seconds, 4),
        f"{name}_calls_per_s": round(calls / seconds, 1),
        f"{name}_p50_ms": round(statistics.median(latencies) * 1000, 3),
        f"{name}_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        f"{name}_caller_cpu_us": round(caller_cpu / calls * 1e6, 1),
        f"{name}_server_cpu_us": round(server_cpu / calls * 1e6, 1),
    }


def main():
    parser = argparse.ArgumentParser(description="Nameko ClusterRpcProxy caller")
    parser.add_argument("service")
    parser.add_argument("--url", required=True)
    parser.add_argument("--payload", required=True, help="the JSON argument of echo")
    parser.add_argument("--seq-calls", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=4000, help="by the concurrent callers")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=100, help="calls before each phase")
    args = parser.parse_args()
    payload = json.loads(args.payload)
    config = {"AMQP_URI": args.url}

    runners = [ClusterRpcProxy(config, timeout=CALL_TIMEOUT) for _ in range(args.callers)]
    proxies = [runner.start()[args.service] for runner in runners]
    reply_queues = [runner._reply_listener.queue.name for runner in runners]
    wrong = 0
    try:
        first = proxies[0]

        def echo(proxy):
            nonlocal wrong
            if proxy.echo(payload) != payload:
                wrong += 1

        out = {}
        for proxy in proxies:  # every proxy's connections are open and warm
            for _ in range(max(1, args.warmup // args.callers)):
                echo(proxy)
        for _ in range(args.warmup):
            echo(first)

        # 1. One caller, one call after another.
        latencies = []
        server0, cpu0, start = first.cpu(), time.process_time(), time.perf_counter()
        for _ in range(args.seq_calls):
            t0 = time.perf_counter()
            echo(first)
            latencies.append(time.perf_counter() - t0)
        seconds, caller_cpu = time.perf_counter() - start, time.process_time() - cpu0
        server_cpu = first.cpu() - server0
        out.update(phase("seq", args.seq_calls, seconds, latencies, caller_cpu, server_cpu))

        # 2. --callers green threads, each with its own proxy, sharing --calls calls.
        latencies = []
        remaining = args.calls

        def caller(proxy):
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                echo(proxy)
                latencies.append(time.perf_counter() - t0)

        pool = eventlet.GreenPool(args.callers)
        server0, cpu0, start = first.cpu(), time.process_time(), time.perf_counter()
        for proxy in proxies:
            pool.spawn(caller, proxy)
        pool.waitall()
        seconds, caller_cpu = time.perf_counter() - start, time.process_time() - cpu0
        server_cpu = first.cpu() - server0
        out.update(phase("conc", args.calls, seconds, latencies, caller_cpu, server_cpu))
    finally:
        for runner in runners:
            runner.stop()
        # Each proxy's reply queue would otherwise linger for its 5-minute x-expires.
        with Connection(args.url) as conn:
            channel = conn.channel()
            for name in reply_queues:
                channel.queue_delete(name)
    if wrong:
        sys.exit(f"{wrong} wrong replies")
    out["callers"] = args.callers
    out["nameko_version"] = version("nameko")
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
