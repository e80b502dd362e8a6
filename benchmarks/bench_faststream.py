"""FastStream peer benchmark: the default RabbitMQ subscriber, one message per call.

Run from the FastStream virtualenv (``faststream[rabbit]>=0.7,<0.8``):
    python benchmarks/bench_faststream.py each QUEUE COUNT
Prints one JSON line (see ``_common.Result``).

``@broker.subscriber(queue, channel=Channel(prefetch_count=1024))``: the default subscriber
(one message per handler call, each in its own task, as aio-pika delivers them) with its
default ack policy (``REJECT_ON_ERROR``: ack once the handler returned). The only thing set
is the consumer channel's prefetch, to the standard workload's 1024 (FastStream sets no QoS
by default, i.e. unlimited prefetch). FastStream decodes the body before the call (JSON,
from ``content_type``); the handler takes it as is and counts.

FastStream logs every message ("Received", "Processed", on stdout) at INFO by default; the
broker gets ``log_level=logging.DEBUG`` here so those lines are filtered out and the figure
measures the framework, not the logging: they cost about a third of its rate when measured
(``--access-log`` keeps FastStream's default; the driver reads the last stdout line).

Timed like ``bench_framework.py``: from just before ``broker.start()`` (connect, channel,
QoS, declare, consume) to the end of ``broker.stop()`` (subscriber stopped once in-flight
handlers finished and acked, channel and connection closed); ``handled_s`` is the time at
which the handler saw the last message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib.metadata import version
from logging import DEBUG
from typing import Any

from _common import Result, cpu, now, parse_args, rss_mb
from faststream.rabbit import Channel, RabbitBroker

SYSTEM = "faststream"


async def each(args: Any, *, access_log: bool) -> Result:
    count: int = args.count
    seen = 0
    handled_at = 0.0
    done = asyncio.Event()

    broker = RabbitBroker(args.url) if access_log else RabbitBroker(args.url, log_level=DEBUG)

    @broker.subscriber(args.queue, channel=Channel(prefetch_count=args.prefetch))
    async def handle(body: Any) -> None:
        nonlocal seen, handled_at
        seen += 1
        if seen >= count:
            handled_at = now()
            done.set()

    rss_start = rss_mb()
    start, cpu_start = now(), cpu()
    await broker.start()
    await done.wait()
    rss_end = rss_mb()
    await broker.stop()  # waits for running handlers (their acks), closes channel/connection
    seconds, cpu_seconds = now() - start, cpu() - cpu_start

    return Result(
        system=SYSTEM,
        version=version("faststream"),
        scenario="route-each",
        messages=seen,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra={"handled_s": round(handled_at - start, 4), "prefetch": args.prefetch},
    )


def main() -> int:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--access-log", action="store_true", help="keep FastStream's per-message log"
        )

    args = parse_args(__doc__ or "", ("each",), configure)
    asyncio.run(each(args, access_log=args.access_log)).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
