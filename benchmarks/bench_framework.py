"""trioworker framework benchmark: an App's AMQP route, in bulks or per message; RSS soak.

Run from the trioworker virtualenv:
    python benchmarks/bench_framework.py bulk QUEUE COUNT       # bulk_size=256, flush_interval=1.0
    python benchmarks/bench_framework.py each QUEUE COUNT       # bulk_size=1, concurrency=1
    python benchmarks/bench_framework.py bulk-rss QUEUE COUNT [--warmup 50000]
    python benchmarks/bench_framework.py retry QUEUE COUNT      # bulk route, retry=: each
                                                                # message fails once
    python benchmarks/bench_framework.py retry-dlq QUEUE COUNT  # fails always: 3 attempts,
                                                                # then the dead-letter queue
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

``retry`` and ``retry-dlq`` run the bulk route with ``retry=Retry(attempts=3, delays=(1,))``
(one delay tier of 1 s). ``retry``: a message's first handling calls ``m.retry()``, its
second succeeds — every message is republished (confirmed) to ``QUEUE.retry.1000`` once and
comes back a second later; the run ends when every message was handled to completion.
``retry-dlq``: the handler raises every time, so each message is handled three times and
then dead-lettered to ``QUEUE.dlq``; the run ends when every copy there is confirmed. Both
delete the delay queue and the DLQ afterwards. ``messages`` is the number of distinct
messages; the handlings are in ``handlings``.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

import trio
from _common import Result, cpu, now, parse_args, rss_mb

import trioworker
from trioworker import Message, Retry
from trioworker.amqp import connect

SYSTEM = "trioworker"


async def route(args: Any) -> Result:
    mode: str = args.mode
    count: int = args.count
    if mode in ("retry", "retry-dlq"):
        return await retry_route(args)
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


async def retry_route(args: Any) -> Result:
    mode: str = args.mode
    count: int = args.count
    queue: str = args.queue
    side_queues = (f"{queue}.retry.1000", f"{queue}.dlq")
    handlings = 0
    completed = 0
    handled_at = 0.0
    done = trio.Event()

    async def handle(messages: list[Message]) -> None:
        nonlocal handlings, completed, handled_at
        handlings += len(messages)
        if mode == "retry-dlq":
            raise RuntimeError("fails always")
        for m in messages:
            if m.attempt == 1:
                m.retry()  # fails once ...
            else:
                completed += 1  # ... then succeeds
        if completed >= count:
            handled_at = now()
            done.set()

    rss_start = rss_mb()
    start, cpu_start = now(), cpu()
    async with trioworker.open_app(
        amqp_url=args.url, prefetch=args.prefetch, name="bench-framework"
    ) as app:
        app.amqp.consume(
            queue,
            bulk_size=args.bulk_size,
            flush_interval=args.flush_interval,
            retry=Retry(attempts=3, delays=(1.0,)),
        )(handle)
        if mode == "retry":
            await done.wait()
        else:
            counters = app.amqp.routes[0].stats.queue(queue)
            while counters.dead_lettered < count:  # noqa: ASYNC110 - a counter, no event
                await trio.sleep(0.01)
            handled_at = now()
            completed = counters.dead_lettered
        rss_end = rss_mb()
    seconds, cpu_seconds = now() - start, cpu() - cpu_start
    async with connect(args.url) as conn:
        channel = await conn.open_channel()
        left = [(await channel.queue_declare(q, passive=True)).message_count for q in side_queues]
        for q in side_queues:
            await channel.queue_delete(q)
    return Result(
        system=SYSTEM,
        version=version("trioworker"),
        scenario=f"route-{mode}",
        messages=completed,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra={
            "handled_s": round(handled_at - start, 4),
            "bulk_size": args.bulk_size,
            "handlings": handlings,
            "left_in_delay_queue": left[0],
            "dead_lettered": left[1],
        },
    )


def main() -> int:
    args = parse_args(__doc__ or "", ("bulk", "each", "bulk-rss", "retry", "retry-dlq"))
    trio.run(route, args).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
