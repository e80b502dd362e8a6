"""trioworker pools benchmark: a CPU-bound route in a process pool, a thread pool, on the loop.

Run from the trioworker virtualenv (with the ``process`` extra: trio-parallel):
    python benchmarks/bench_pools.py process QUEUE COUNT --bulk-size 64  # kind="process", size=2
    python benchmarks/bench_pools.py thread QUEUE COUNT --bulk-size 64   # kind="thread", size=2
    python benchmarks/bench_pools.py loop QUEUE COUNT --bulk-size 64     # async def, on the loop
Prints one JSON line (see ``_common.Result``).

The handler (``pool_work.py``) does about 2 ms of pure-Python CPU work per message, holding
the GIL, on bulks of ``--bulk-size`` messages; the route runs ``concurrency=2`` bulks at
once, so a pool of 2 can keep both workers busy. Timed like ``bench_framework.py``: from
just before the app starts to the end of its graceful stop (the process mode's worker
processes start on the first bulks and stop with the app: both inside the timing).
``cpu_us_per_msg`` is the CPU of the app *and* its worker processes per message
(``parent_cpu_us_per_msg``: the app's alone); ``work_ms`` is what one call of the work took
in this process before the run.

``hop_us_per_bulk``: what the pool itself costs per bulk, measured after the timed run on a
no-op handler with a bulk of ``--bulk-size`` 256-byte messages, 200 calls one after the
other (median): for ``process``, the route's process call — snapshot the messages, pickle,
pipe to the worker, rebuild them there, decisions back, apply; for ``thread``, the hop to a
pool thread and back; for ``loop``, awaiting the handler (about 0).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from importlib.metadata import version
from typing import Any

import pool_work
import trio
from _common import BODY, Result, cpu, now, parse_args, rss_mb

import trioworker
from trioworker import Message
from trioworker.amqp import Delivery
from trioworker.backends.amqp._snapshot import process_call
from trioworker.pipeline._handlers import adapt

SYSTEM = "trioworker"
POOL_SIZE = 2
HOP_CALLS = 200


def children_cpu() -> float:
    """CPU seconds of this process's finished (and reaped) children: the pool's workers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def work_ms() -> float:
    times = []
    for _ in range(21):
        start = time.perf_counter()
        pool_work.work(BODY)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def route(args: Any) -> Result:
    mode: str = args.mode
    count: int = args.count
    queue: str = args.queue
    one_call_ms = work_ms()
    app = trioworker.App(amqp_url=args.url, prefetch=args.prefetch, name="bench-pools")
    if mode == "loop":
        handler: Any = pool_work.handle_on_loop
        pool = None
    else:
        app.pool("cpu", kind=mode, size=POOL_SIZE)
        handler, pool = pool_work.handle, "cpu"
    app.amqp.consume(
        queue,
        bulk_size=args.bulk_size,
        flush_interval=args.flush_interval,
        concurrency=POOL_SIZE,
        pool=pool,
    )(handler)
    counters = app.amqp.routes[0].stats.queue(queue)
    rss_start = rss_mb()
    start, cpu_start, children_start = now(), cpu(), children_cpu()
    async with trioworker.open_app(app):
        while counters.acked < count:  # noqa: ASYNC110 - a counter, no event
            await trio.sleep(0.01)
        handled_at = now()
        rss_end = rss_mb()
    seconds = now() - start
    parent_cpu = cpu() - cpu_start
    workers_cpu = children_cpu() - children_start
    handled = counters.acked
    hop = await hop_us_per_bulk(args)
    return Result(
        system=SYSTEM,
        version=version("trioworker"),
        scenario=f"route-pool-{mode}",
        messages=handled,
        seconds=seconds,
        cpu_seconds=parent_cpu + workers_cpu,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra={
            "handled_s": round(handled_at - start, 4),
            "bulk_size": args.bulk_size,
            "pool_size": POOL_SIZE if pool else None,
            "work_ms": round(one_call_ms, 3),
            "parent_cpu_us_per_msg": round(parent_cpu / max(handled, 1) * 1e6, 2),
            "hop_us_per_bulk": round(hop, 1),
            "note": f"work {one_call_ms:.2f} ms/msg; hop {hop:,.0f} us/bulk",
        },
    )


async def hop_us_per_bulk(args: Any) -> float:
    """The pool's own cost per bulk (see the module docstring), in microseconds."""
    mode: str = args.mode
    messages = [
        Message(Delivery(1, "bench", tag, False, "", args.queue, BODY, b"\x00\x00"), args.queue)
        for tag in range(1, args.bulk_size + 1)
    ]
    app = trioworker.App(amqp_url=args.url, name="bench-pools-hop")
    pool = None if mode == "loop" else app.pool("hop", kind=mode, size=1)
    times: list[float] = []
    async with trioworker.open_app(app):
        if pool is None:
            call = adapt(pool_work.noop_on_loop)
        elif mode == "process":
            call = process_call(pool_work.noop, pool, publish=app.amqp.publish)
        else:
            call = adapt(pool_work.noop, pool=pool)
        for _ in range(10):  # the worker starts, caches warm up
            await call(messages)
        for _ in range(HOP_CALLS):
            begin = time.perf_counter()
            await call(messages)
            times.append(time.perf_counter() - begin)
    return statistics.median(times) * 1e6


def main() -> int:
    args = parse_args(__doc__ or "", ("process", "thread", "loop"))
    trio.run(route, args).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
