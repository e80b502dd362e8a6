"""aio-pika peer benchmark: consume with multiple acks or one ack per message, publish.

Run from the aio-pika virtualenv:
    python benchmarks/bench_aiopika.py consume QUEUE COUNT        # ack(multiple=True) every 256
    python benchmarks/bench_aiopika.py consume-each QUEUE COUNT   # message.ack() per message
    python benchmarks/bench_aiopika.py publish QUEUE COUNT
Prints one JSON line (see ``_common.Result``).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

import aio_pika
from _common import BODY, CONTENT_TYPE, Result, cpu, now, parse_args, rss_mb
from aio_pika.abc import AbstractIncomingMessage


async def consume(args: Any, *, each: bool = False) -> Result:
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        queue = await channel.get_queue(args.queue, ensure=False)
        rss_start = rss_mb()

        count: int = args.count
        every: int = args.ack_every
        received = 0
        done = asyncio.Event()

        # queue.consume(callback); ``async with queue.iterator()`` measured the same (it adds
        # an asyncio.Queue hop on top of the same per-message task aiormq creates).
        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal received
            received += 1
            if received % every == 0 or received == count:
                await message.ack(multiple=True)
                if received == count:
                    done.set()

        # consume-each: the idiomatic per-message pattern, one ``basic.ack`` per message.
        # ``await message.ack()`` measured faster than ``async with message.process():``
        # (which also acks on success, after its exception handling).
        async def on_message_each(message: AbstractIncomingMessage) -> None:
            nonlocal received, nbytes
            nbytes += len(message.body)
            await message.ack()
            received += 1
            if received == count:
                done.set()

        nbytes = 0
        start, cpu_start = now(), cpu()
        consumer_tag = await queue.consume(on_message_each if each else on_message, no_ack=False)
        await done.wait()
        await queue.cancel(consumer_tag)  # round trip: the acks before it reached the broker
        seconds, cpu_seconds = now() - start, cpu() - cpu_start
        rss_end = rss_mb()

    return Result(
        system="aio-pika",
        version=aio_pika.__version__,
        scenario="consume-each" if each else "consume",
        messages=received,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
    )


async def publish(args: Any) -> Result:
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        routing_key: str = args.queue
        window: int = args.window
        rss_start = rss_mb()

        # ``Exchange.publish`` returns once the broker confirmed the message, so a window of
        # N outstanding confirms is N publish tasks in flight: a sliding window that waits for
        # the oldest before starting a new one (confirms arrive in order). Measured as fast
        # as ``asyncio.gather`` over chunks of N and faster than a semaphore-bounded wrapper.
        pending: deque[asyncio.Future[Any]] = deque()
        mode = aio_pika.DeliveryMode(args.delivery_mode)
        start, cpu_start = now(), cpu()
        for _ in range(args.count):
            if len(pending) >= window:
                await pending.popleft()  # re-raises a nack (DeliveryError)
            message = aio_pika.Message(BODY, delivery_mode=mode, content_type=CONTENT_TYPE)
            pending.append(
                asyncio.ensure_future(exchange.publish(message, routing_key=routing_key))
            )
        for future in pending:
            await future
        seconds, cpu_seconds = now() - start, cpu() - cpu_start
        rss_end = rss_mb()

    return Result(
        system="aio-pika",
        version=aio_pika.__version__,
        scenario="publish",
        messages=args.count,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
    )


def main() -> int:
    args = parse_args(__doc__ or "", ("consume", "consume-each", "publish"))
    if args.mode == "publish":
        result = asyncio.run(publish(args))
    else:
        result = asyncio.run(consume(args, each=args.mode == "consume-each"))
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
