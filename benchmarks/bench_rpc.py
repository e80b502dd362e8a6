"""trioworker RPC benchmark: an App's ``@app.amqp.rpc`` route called through ``rpc_client``.

Run from the trioworker virtualenv:
    python benchmarks/bench_rpc.py rpc QUEUE COUNT [--callers 64] [--latency-calls 2000]
Prints one JSON line (see ``_common.Result``).

The server is an :class:`trioworker.App` with one RPC route on QUEUE (route defaults, JSON
codec): the handler returns the decoded request, so every reply is the request echoed. The
callers share one :func:`trioworker.amqp.rpc_client` (its own connection, direct reply-to),
as an application would. The request is the 256-byte JSON object of the other benchmarks.

Two phases, after 200 warm-up calls:

1. latency: ``--latency-calls`` calls one after the other (one caller); ``p50_ms``,
   ``p99_ms`` and ``latency_calls_per_s`` are from this phase;
2. throughput: COUNT calls made by ``--callers`` concurrent tasks; ``seconds`` and
   ``msg_per_s`` (calls/s) are from this phase, ``messages`` is COUNT, and
   ``cpu_us_per_msg`` is this process's CPU time (server and callers) per call.

``--concurrency N`` sets the route's ``concurrency`` (default: the route's default);
``--handler-sleep S`` makes the handler await ``trio.sleep(S)`` first, like a handler that
waits for a database (not part of the ``rpc`` scenario).
"""

from __future__ import annotations

import json
import statistics
import sys
from importlib.metadata import version
from typing import Any

import trio
from _common import BODY, Result, cpu, now, parse_args, rss_mb

import trioworker
from trioworker import Message

SYSTEM = "trioworker"
PAYLOAD = json.loads(BODY)
WARMUP_CALLS = 200


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


async def run(args: Any) -> Result:
    queue: str = args.queue
    count: int = args.count
    async with trioworker.open_app(amqp_url=args.url, prefetch=args.prefetch) as app:
        options = {} if args.concurrency is None else {"concurrency": args.concurrency}

        @app.amqp.rpc(queue, **options)
        async def echo(message: Message) -> Any:
            if args.handler_sleep:
                await trio.sleep(args.handler_sleep)  # an I/O-bound handler
            return message.json()

        with trio.fail_after(30):
            while not app.health()["amqp"].ok:  # noqa: ASYNC110 - polling
                await trio.sleep(0.01)

        async with trioworker.amqp.rpc_client(args.url) as client:
            for _ in range(WARMUP_CALLS):
                if await client.call(queue, PAYLOAD) != PAYLOAD:
                    raise RuntimeError("wrong reply")
            rss_start = rss_mb()

            latencies: list[float] = []
            started = now()
            for _ in range(args.latency_calls):
                t0 = now()
                await client.call(queue, PAYLOAD)
                latencies.append(now() - t0)
            latency_seconds = now() - started

            remaining = count
            wrong = 0

            async def caller() -> None:
                nonlocal remaining, wrong
                while remaining > 0:
                    remaining -= 1
                    if await client.call(queue, PAYLOAD) != PAYLOAD:
                        wrong += 1

            cpu_start = cpu()
            start = now()
            async with trio.open_nursery() as nursery:
                for _ in range(args.callers):
                    nursery.start_soon(caller)
            seconds = now() - start
            cpu_seconds = cpu() - cpu_start
            if wrong:
                raise RuntimeError(f"{wrong} wrong replies")
            rss_end = rss_mb()

    return Result(
        system=SYSTEM,
        version=version("trioworker"),
        scenario="rpc",
        messages=count,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra={
            "callers": args.callers,
            "latency_calls": args.latency_calls,
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "latency_calls_per_s": round(args.latency_calls / latency_seconds, 1),
        },
    )


def configure(parser: Any) -> None:
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers (phase 2)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="the route's concurrency (its default)"
    )
    parser.add_argument(
        "--handler-sleep", type=float, default=0.0, help="seconds the handler awaits (I/O)"
    )
    parser.add_argument(
        "--latency-calls", type=int, default=2000, help="sequential calls (phase 1)"
    )


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], ("rpc",), configure)
    trio.run(run, args).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
