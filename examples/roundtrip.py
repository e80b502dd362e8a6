"""Publish real messages to the local RabbitMQ, consume them back, and say what happened.

Run it with ``bash scripts/run-example.sh`` (installs what is missing), or directly::

    python examples/roundtrip.py [--count 1000] [--url amqp://guest:guest@127.0.0.1:5672/%2F]

It declares a private queue, publishes ``--count`` JSON messages with publisher confirms,
consumes them with a prefetch window, acknowledges them in batches with ``multiple=True``,
checks every message arrived exactly once, deletes the queue and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import trio

from trioworker import amqp
from trioworker.amqp import BasicProperties


async def roundtrip(url: str, count: int) -> int:
    queue = f"trioworker-example-{os.getpid()}"
    async with amqp.connect(url, connection_name="trioworker-example") as conn:
        server = conn.server_properties
        print(
            f"connected to {server.get('product')} {server.get('version')} at "
            f"{conn.params.safe_url()} (heartbeat {conn.heartbeat} s, frame_max {conn.frame_max})"
        )
        async with conn.channel() as channel:
            await channel.queue_declare(queue, durable=False, auto_delete=False)
            try:
                await channel.confirm_select()
                props = BasicProperties(content_type="application/json", delivery_mode=2)
                started = time.perf_counter()
                for i in range(count):
                    body = json.dumps({"order": i, "item": "book", "qty": i % 5 + 1}).encode()
                    await channel.publish(body, routing_key=queue, properties=props)
                    await channel.wait_for_confirms(max_outstanding=1000)
                await channel.wait_for_confirms(max_outstanding=0)
                published = time.perf_counter() - started
                print(f"published {count} messages with confirms in {published:.3f} s")

                await channel.basic_qos(prefetch_count=256)
                consumer = await channel.basic_consume(queue)
                seen: set[int] = set()
                started = time.perf_counter()
                with trio.fail_after(60):
                    async for batch in consumer.batches():
                        for delivery in batch:
                            seen.add(json.loads(delivery.body)["order"])
                        channel.basic_ack(batch[-1].delivery_tag, multiple=True)
                        if len(seen) >= count:
                            break
                consumed = time.perf_counter() - started
                await channel.basic_cancel(consumer.consumer_tag)
                print(f"consumed and acked {len(seen)} messages in {consumed:.3f} s")
                left = (await channel.queue_declare(queue, passive=True)).message_count
            finally:
                await channel.queue_delete(queue)
    ok = seen == set(range(count)) and left == 0
    print(
        f"{'OK' if ok else 'FAILED'}: {len(seen)}/{count} distinct messages round-tripped, "
        f"{left} left in the queue"
    )
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--url", default=amqp.default_url())
    args = parser.parse_args()
    try:
        sys.exit(trio.run(roundtrip, args.url, args.count))
    except amqp.AMQPConnectionError as exc:
        sys.exit(f"cannot talk to RabbitMQ: {exc}")


if __name__ == "__main__":
    main()
