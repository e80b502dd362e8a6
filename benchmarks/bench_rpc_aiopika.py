"""aio-pika RPC peer benchmark: the RPC pattern of aio-pika's documentation (tutorial 6).

Run from the aio-pika virtualenv:
    python benchmarks/bench_rpc_aiopika.py rpc QUEUE COUNT [--callers 64] [--latency-calls 2000]
Prints one JSON line (see ``_common.Result``); the phases and figures are those of
``bench_rpc.py`` (``cpu_us_per_msg``: this process's CPU time per call, server and callers).

Server (its own connection): ``queue.iterator()`` over QUEUE with QoS ``--prefetch``; for
each request, ``async with message.process():`` publish the reply to ``reply_to`` through
the default exchange with the request's ``correlation_id`` (the reply is the JSON request
decoded and encoded again, like trioworker's echo route). Client (its own connection): an
exclusive, auto-delete callback queue consumed with ``no_ack=True``, a future per call in a
dict keyed by ``correlation_id`` (a ``uuid4``), ``exchange.publish(...)`` with ``reply_to``
set to the callback queue. All callers share the client, as in the tutorial's ``RpcClient``.
The client's channel has publisher confirms on (aio-pika's default, as in the tutorial);
``--no-confirms`` turns them off (not part of the ``rpc`` scenario).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import uuid
from typing import Any

import aio_pika
from _common import BODY, Result, cpu, now, parse_args, rss_mb
from aio_pika.abc import AbstractIncomingMessage

SYSTEM = "aio-pika"
PAYLOAD = json.loads(BODY)
WARMUP_CALLS = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


async def serve(url: str, queue_name: str, prefetch: int, ready: asyncio.Event) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        exchange = channel.default_exchange
        queue = await channel.declare_queue(queue_name, durable=True)
        async with queue.iterator() as requests:
            ready.set()
            message: AbstractIncomingMessage
            async for message in requests:
                async with message.process(requeue=False):
                    assert message.reply_to is not None
                    result = json.loads(message.body)
                    await exchange.publish(
                        aio_pika.Message(
                            body=json.dumps(result).encode(),
                            content_type="application/json",
                            correlation_id=message.correlation_id,
                        ),
                        routing_key=message.reply_to,
                    )


class RpcClient:
    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[Any]] = {}

    async def connect(self, url: str, *, confirms: bool = True) -> RpcClient:
        self.connection = await aio_pika.connect(url)
        # aio-pika's default (the tutorial's too): publisher confirms on, so each request
        # waits for its confirm before the reply.
        self.channel = await self.connection.channel(publisher_confirms=confirms)
        self.callback_queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.callback_queue.consume(self.on_response, no_ack=True)
        return self

    async def on_response(self, message: AbstractIncomingMessage) -> None:
        if message.correlation_id is None:
            return
        future = self.futures.pop(message.correlation_id, None)
        if future is not None:
            future.set_result(json.loads(message.body))

    async def call(self, queue: str, payload: Any) -> Any:
        correlation_id = str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        self.futures[correlation_id] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(payload).encode(),
                content_type="application/json",
                correlation_id=correlation_id,
                reply_to=self.callback_queue.name,
            ),
            routing_key=queue,
        )
        return await future


async def run(args: Any) -> Result:
    queue: str = args.queue
    count: int = args.count
    ready = asyncio.Event()
    server = asyncio.create_task(serve(args.url, queue, args.prefetch, ready))
    await asyncio.wait_for(ready.wait(), 30)
    client = await RpcClient().connect(args.url, confirms=not args.no_confirms)
    try:
        for _ in range(WARMUP_CALLS):
            if await client.call(queue, PAYLOAD) != PAYLOAD:
                raise RuntimeError("wrong reply")
        rss_start = rss_mb()

        latencies: list[float] = []
        started = now()
        for _ in range(args.latency_calls):
            t0 = now()
            await client.call(queue, PAYLOAD)
            latencies.append(now() - t0)
        latency_seconds = now() - started

        remaining = count
        wrong = 0

        async def caller() -> None:
            nonlocal remaining, wrong
            while remaining > 0:
                remaining -= 1
                if await client.call(queue, PAYLOAD) != PAYLOAD:
                    wrong += 1

        cpu_start = cpu()
        start = now()
        await asyncio.gather(*(caller() for _ in range(args.callers)))
        seconds = now() - start
        cpu_seconds = cpu() - cpu_start
        if wrong:
            raise RuntimeError(f"{wrong} wrong replies")
        rss_end = rss_mb()
    finally:
        await client.connection.close()
        server.cancel()
        try:
            await server
        except asyncio.CancelledError:
            pass

    return Result(
        system=SYSTEM,
        version=aio_pika.__version__,
        scenario="rpc",
        messages=count,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra={
            "callers": args.callers,
            "latency_calls": args.latency_calls,
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "latency_calls_per_s": round(args.latency_calls / latency_seconds, 1),
        },
    )


def configure(parser: Any) -> None:
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers (phase 2)")
    parser.add_argument(
        "--no-confirms",
        action="store_true",
        help="client channel without publisher confirms (not aio-pika's default)",
    )
    parser.add_argument(
        "--latency-calls", type=int, default=2000, help="sequential calls (phase 1)"
    )


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], ("rpc",), configure)
    result = asyncio.run(run(args))
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
