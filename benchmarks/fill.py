"""Broker helpers for the benchmark driver: reset a queue, fill it, read its depth.

    python benchmarks/fill.py reset QUEUE            # delete + declare the durable queue (pika)
    python benchmarks/fill.py depth QUEUE            # print the ready-message count (pika)
    python benchmarks/fill.py delete QUEUE           # delete the queue (pika)
    python benchmarks/fill.py fill QUEUE N [--client pika|trioworker]

``reset``, ``depth`` and ``delete`` use pika, so they don't depend on trioworker being right.
``fill`` publishes N persistent 256-byte JSON messages (the same body every system consumes):
- ``--client pika`` (default, run from the pika venv): plain publishes on a BlockingConnection,
  then waits until the queue holds exactly N messages;
- ``--client trioworker`` (run from the trioworker venv): publisher confirms, window 1000;
  also checked by the driver with ``depth`` afterwards.
Prints one JSON line: {"action": ..., "queue": ..., "messages": ..., "seconds": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _common import BODY, CONTENT_TYPE, DEFAULT_URL, DEFAULT_WINDOW

FILL_TIMEOUT = 120.0


def _pika_channel(url: str) -> tuple[Any, Any]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


def reset(url: str, queue: str) -> int:
    connection, channel = _pika_channel(url)
    channel.queue_delete(queue)
    channel.queue_declare(queue, durable=True)
    connection.close()
    return 0


def delete(url: str, queue: str) -> int:
    connection, channel = _pika_channel(url)
    channel.queue_delete(queue)
    connection.close()
    return 0


def depth(url: str, queue: str) -> int:
    connection, channel = _pika_channel(url)
    frame = channel.queue_declare(queue, passive=True)
    connection.close()
    return int(frame.method.message_count)


def fill_pika(url: str, queue: str, count: int) -> None:
    import pika

    connection, channel = _pika_channel(url)
    props = pika.BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
    publish = channel.basic_publish
    start_depth = int(channel.queue_declare(queue, passive=True).method.message_count)
    for i in range(count):
        publish("", queue, BODY, props)
        if i % 10_000 == 9_999:
            connection.process_data_events(0)  # service heartbeats / flow control
    deadline = time.monotonic() + FILL_TIMEOUT
    while True:
        have = int(channel.queue_declare(queue, passive=True).method.message_count)
        if have >= start_depth + count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"fill: queue {queue!r} holds {have}, expected {count}")
        connection.sleep(0.05)
    connection.close()


def fill_trioworker(url: str, queue: str, count: int, window: int) -> None:
    import trio

    from trioworker import amqp
    from trioworker.amqp import BasicProperties

    async def run() -> None:
        async with amqp.connect(url) as conn, conn.channel() as ch:
            await ch.confirm_select()
            props = BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
            for _ in range(count):
                await ch.wait_for_confirms(max_outstanding=window - 1)
                await ch.publish(BODY, routing_key=queue, exchange="", properties=props)
            await ch.wait_for_confirms(max_outstanding=0)

    trio.run(run)


def main() -> int:
    parser = argparse.ArgumentParser(description="benchmark broker helpers")
    parser.add_argument("action", choices=("reset", "depth", "delete", "fill"))
    parser.add_argument("queue")
    parser.add_argument("count", type=int, nargs="?", default=0)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--client", choices=("pika", "trioworker"), default="pika")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    args = parser.parse_args()

    start = time.perf_counter()
    out: dict[str, Any] = {"action": args.action, "queue": args.queue}
    if args.action == "reset":
        reset(args.url, args.queue)
    elif args.action == "delete":
        delete(args.url, args.queue)
    elif args.action == "depth":
        out["messages"] = depth(args.url, args.queue)
    else:
        if args.count <= 0:
            parser.error("fill needs a positive count")
        if args.client == "pika":
            fill_pika(args.url, args.queue, args.count)
        else:
            fill_trioworker(args.url, args.queue, args.count, args.window)
        out["messages"] = args.count
        out["client"] = args.client
    out["seconds"] = round(time.perf_counter() - start, 3)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
