"""trioworker framework benchmark: an App's AMQP route, in bulks or per message; RSS soak.

Run from the trioworker virtualenv:
    python benchmarks/bench_framework.py bulk QUEUE COUNT       # bulk_size=256, flush_interval=1.0
    python benchmarks/bench_framework.py each QUEUE COUNT       # bulk_size=1, concurrency=1
    python benchmarks/bench_framework.py bulk-rss QUEUE COUNT [--warmup 50000]
Prints one JSON line (see ``_common.Result``).

The route's handler does the same minimal work as every peer's: it reads each message's raw
body (``len(m.body)``) and counts. The default actions apply: ACK on success, which the
framework coalesces into ``Basic.Ack(multiple=True)`` runs.

Timed like every framework peer (``bench_asyncworker.py``, ``bench_faststream.py``): from
just before the app starts (``open_app``: connect, channel, QoS, consume) to the moment its
graceful shutdown has returned (consumer cancelled, acks sent, channel and connection closed
with their round trips). ``handled_s`` is the time at which the handler saw the last message.

``bulk-rss`` runs the bulk route and samples RSS every ``--warmup`` messages (in the handler):
``rss_warm_mb`` (after the first ``--warmup`` messages), ``rss_end_mb`` (after the last one,
before the shutdown), ``rss_growth_mb`` (end minus warm) and ``rss_samples_mb``.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

import trio
from _common import Result, cpu, now, parse_args, rss_mb

import trioworker
from trioworker import Message

SYSTEM = "trioworker"


async def route(args: Any) -> Result:
    mode: str = args.mode
    count: int = args.count
    track_rss = mode == "bulk-rss"
    bulk_size = 1 if mode == "each" else args.bulk_size
    sample_every: int = args.warmup
    samples: list[float] = []
    next_sample = sample_every
    seen = 0
    nbytes = 0
    handled_at = 0.0
    done = trio.Event()

    async def handle(messages: list[Message]) -> None:
        nonlocal seen, nbytes, next_sample, handled_at
        for m in messages:
            nbytes += len(m.body)
        seen += len(messages)
        if track_rss and seen >= next_sample:
            samples.append(rss_mb())
            next_sample += sample_every
        if seen >= count:
            handled_at = now()
            done.set()

    rss_start = rss_mb()
    start, cpu_start = now(), cpu()
    async with trioworker.open_app(
        amqp_url=args.url, prefetch=args.prefetch, name="bench-framework"
    ) as app:
        app.amqp.consume(
            args.queue, bulk_size=bulk_size, flush_interval=args.flush_interval, concurrency=1
        )(handle)
        await done.wait()
        rss_end = rss_mb()
    # Leaving the block above was the graceful shutdown: the acks are flushed.
    seconds, cpu_seconds = now() - start, cpu() - cpu_start

    extra: dict[str, Any] = {
        "handled_s": round(handled_at - start, 4),
        "bulk_size": bulk_size,
        "body_bytes": nbytes,
    }
    if track_rss:
        rss_warm = samples[0] if samples else rss_start
        extra |= {
            "rss_warm_mb": round(rss_warm, 2),
            "rss_growth_mb": round(rss_end - rss_warm, 2),
            "rss_samples_mb": [round(s, 2) for s in samples],
        }
    return Result(
        system=SYSTEM,
        version=version("trioworker"),
        scenario=f"route-{mode}",
        messages=seen,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra=extra,
    )


def main() -> int:
    args = parse_args(__doc__ or "", ("bulk", "each", "bulk-rss"))
    trio.run(route, args).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
