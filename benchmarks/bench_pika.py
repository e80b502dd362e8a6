"""pika (BlockingConnection) peer benchmark: consume with multiple acks.

Run from the pika virtualenv:  python benchmarks/bench_pika.py consume QUEUE COUNT
Prints one JSON line (see ``_common.Result``).
"""

from __future__ import annotations

import sys
from typing import Any

import pika
from _common import Result, cpu, now, parse_args, rss_mb


def consume(args: Any) -> Result:
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    rss_start = rss_mb()

    count: int = args.count
    every: int = args.ack_every
    received = 0
    ack = channel.basic_ack

    # The generator form (``channel.consume``) measured faster than basic_consume with a
    # callback + start_consuming on this workload, so it is the one used.
    start, cpu_start = now(), cpu()
    for method, _props, _body in channel.consume(args.queue, auto_ack=False):
        received += 1
        if received % every == 0 or received == count:
            ack(method.delivery_tag, multiple=True)
            if received == count:
                break
    channel.cancel()  # basic.cancel + cancel-ok: the acks before it have reached the broker
    seconds, cpu_seconds = now() - start, cpu() - cpu_start

    rss_end = rss_mb()
    connection.close()
    return Result(
        system="pika",
        version=pika.__version__,
        scenario="consume",
        messages=received,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
    )


def main() -> int:
    args = parse_args(__doc__ or "", ("consume",))
    consume(args).emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
