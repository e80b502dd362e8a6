"""trioworker client benchmark: consume with multiple acks, publish with confirms, RSS soak.

Run from the trioworker virtualenv:
    python benchmarks/bench_trioworker.py consume QUEUE COUNT
    python benchmarks/bench_trioworker.py publish QUEUE COUNT
    python benchmarks/bench_trioworker.py rss QUEUE COUNT [--warmup 50000]
Prints one JSON line (see ``_common.Result``). ``rss`` consumes like ``consume`` and also
reports RSS sampled every ``--warmup`` messages: ``rss_warm_mb`` (after the first ``--warmup``
messages), ``rss_growth_mb`` (end minus warm) and ``rss_samples_mb``.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

import trio
from _common import BODY, CONTENT_TYPE, Result, cpu, now, parse_args, rss_mb

from trioworker import amqp
from trioworker.amqp import BasicProperties

SYSTEM = "trioworker"


async def consume(args: Any, *, track_rss: bool) -> Result:
    count: int = args.count
    every: int = args.ack_every
    sample_every: int = args.warmup
    samples: list[float] = []
    received = 0
    unacked = 0

    async with amqp.connect(args.url) as conn, conn.channel() as ch:
        await ch.basic_qos(prefetch_count=args.prefetch)
        rss_start = rss_mb()
        next_sample = sample_every

        start, cpu_start = now(), cpu()
        consumer = await ch.basic_consume(args.queue)
        async for batch in consumer.batches():
            for delivery in batch:
                received += 1
                unacked += 1
                if unacked == every or received == count:
                    ch.basic_ack(delivery.delivery_tag, multiple=True)
                    unacked = 0
                    if received == count:
                        break
            if received >= count:
                break
            if track_rss and received >= next_sample:
                samples.append(rss_mb())
                next_sample += sample_every
        await ch.basic_cancel(consumer.consumer_tag)  # round trip after the last ack
        seconds, cpu_seconds = now() - start, cpu() - cpu_start
        rss_end = rss_mb()

    extra: dict[str, Any] = {}
    if track_rss:
        rss_warm = samples[0] if samples else rss_start
        extra = {
            "rss_warm_mb": round(rss_warm, 2),
            "rss_growth_mb": round(rss_end - rss_warm, 2),
            "rss_samples_mb": [round(s, 2) for s in samples],
        }
    return Result(
        system=SYSTEM,
        version=version("trioworker"),
        scenario="rss" if track_rss else "consume",
        messages=received,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra=extra,
    )


async def publish(args: Any) -> Result:
    routing_key: str = args.queue
    keep: int = args.window - 1
    async with amqp.connect(args.url) as conn, conn.channel() as ch:
        await ch.confirm_select()
        props = BasicProperties(delivery_mode=args.delivery_mode, content_type=CONTENT_TYPE)
        rss_start = rss_mb()

        start, cpu_start = now(), cpu()
        for _ in range(args.count):
            await ch.wait_for_confirms(max_outstanding=keep)  # <= window outstanding
            await ch.publish(BODY, routing_key=routing_key, exchange="", properties=props)
        await ch.wait_for_confirms(max_outstanding=0)
        seconds, cpu_seconds = now() - start, cpu() - cpu_start
        rss_end = rss_mb()

    return Result(
        system=SYSTEM,
        version=version("trioworker"),
        scenario="publish",
        messages=args.count,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
    )


def main() -> int:
    args = parse_args(__doc__ or "", ("consume", "publish", "rss"))
    if args.mode == "publish":
        result = trio.run(publish, args)
    else:
        result = trio.run(lambda: consume(args, track_rss=args.mode == "rss"))
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
