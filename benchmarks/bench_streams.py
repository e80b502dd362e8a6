"""Stream benchmark (``stream-consume``): a route reading a RabbitMQ stream vs pika's consumer.

Run from the system's virtualenv:
    python benchmarks/bench_streams.py trioworker QUEUE COUNT   # the trioworker venv
    python benchmarks/bench_streams.py pika QUEUE COUNT         # the pika venv
Prints one JSON line (see ``_common.Result``).

Each run makes its own stream, ``QUEUE.stream`` (the driver's classic queue stays unused: a
stream's messages are never "ready", so the driver's depth checks cannot see them), fills
it with COUNT persistent 256-byte messages — confirmed, before the clock starts — reads them
all from ``"first"``, and deletes it.

- ``trioworker``: ``@app.amqp.consume(Queue(..., kind="stream"), stream_offset="first")``, a
  bulk route (bulk_size=256, flush_interval=1 s) whose handler reads each body and counts.
  Per delivery it also does what a stream route must: read the ``x-stream-offset`` header,
  keep its position, and send every decision as an ack. Timed as ``bench_framework.py``:
  from just before ``open_app`` to the end of its graceful shutdown.
- ``pika``: ``basic_consume`` with ``x-stream-offset: "first"``, the generator form, acking
  ``multiple=True`` every 256 (a stream consumer must ack: acks are its credit). Timed from
  the consume to its cancel.

Both use prefetch 1024. The figure to read is client CPU per message: the broker (reading
segment files) shares the two cores, and sets the rate.
"""

from __future__ import annotations

import sys
from typing import Any

from _common import BODY, CONTENT_TYPE, Result, cpu, now, parse_args, rss_mb

STREAM = {"x-queue-type": "stream"}


def pika_run(args: Any) -> Result:
    import pika

    name, count = f"{args.queue}.stream", args.count
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.queue_delete(name)
    channel.queue_declare(name, durable=True, arguments=STREAM)
    props = pika.BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
    for i in range(count - 1):
        channel.basic_publish("", name, BODY, props)
        if i % 10_000 == 9_999:
            connection.process_data_events(0)
    # Confirms are in channel order: once the last is confirmed, every one before it is in.
    channel.confirm_delivery()
    channel.basic_publish("", name, BODY, props)
    channel.basic_qos(prefetch_count=args.prefetch)
    rss_start = rss_mb()
    received = 0
    every: int = args.ack_every
    start, cpu_start = now(), cpu()
    stream = channel.consume(name, auto_ack=False, arguments={"x-stream-offset": "first"})
    for method, _props, _body in stream:
        received += 1
        if received % every == 0 or received == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
            if received == count:
                break
    channel.cancel()
    seconds, cpu_seconds = now() - start, cpu() - cpu_start
    rss_end = rss_mb()
    channel.queue_delete(name)
    connection.close()
    return Result("pika", pika.__version__, "stream-consume", received, seconds,
                  rss_start, rss_end, cpu_seconds)  # fmt: skip


async def trioworker_run(args: Any) -> Result:
    from importlib.metadata import version

    import trio

    from trioworker import Message, Queue, open_app
    from trioworker.amqp import BasicProperties, connect

    name, count = f"{args.queue}.stream", args.count
    async with connect(args.url) as conn:
        channel = await conn.open_channel()
        await channel.queue_delete(name)
        await channel.queue_declare(name, durable=True, arguments=STREAM)
        await channel.confirm_select()
        props = BasicProperties(delivery_mode=2, content_type=CONTENT_TYPE)
        for _ in range(count):
            await channel.publish(BODY, routing_key=name, properties=props)
            await channel.wait_for_confirms(args.window)  # a window of unconfirmed ones
        await channel.wait_for_confirms()
    seen = nbytes = 0
    done = trio.Event()

    async def handle(messages: list[Message]) -> None:
        nonlocal seen, nbytes
        for m in messages:
            nbytes += len(m.body)
        seen += len(messages)
        if seen >= count:
            done.set()

    rss_start = rss_mb()
    start, cpu_start = now(), cpu()
    async with open_app(amqp_url=args.url, prefetch=args.prefetch, name="bench-streams") as app:
        app.amqp.consume(
            Queue(name, kind="stream"),
            bulk_size=args.bulk_size,
            flush_interval=args.flush_interval,
            stream_offset="first",
        )(handle)
        await done.wait()
        rss_end = rss_mb()
    seconds, cpu_seconds = now() - start, cpu() - cpu_start
    async with connect(args.url) as conn:
        channel = await conn.open_channel()
        await channel.queue_delete(name)
    return Result("trioworker", version("trioworker"), "stream-consume", seen, seconds,
                  rss_start, rss_end, cpu_seconds, extra={"body_bytes": nbytes})  # fmt: skip


def main() -> int:
    args = parse_args(__doc__ or "", ("trioworker", "pika"))
    if args.mode == "pika":
        result = pika_run(args)
    else:
        import trio

        result = trio.run(trioworker_run, args)
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
