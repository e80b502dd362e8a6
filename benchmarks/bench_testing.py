"""How much a test suite notices the test toolkit: TestClient on the memory broker vs RabbitMQ.

    .venv/bin/python benchmarks/bench_testing.py [--url amqp://...] [--rounds 3]

Two scenarios, each run on the memory broker and on the real broker, alternating (memory,
rabbitmq, memory, ...), median of ``--rounds``:

* ``bulk``: 10,000 messages of 256-byte JSON through a bulk route (``bulk_size=256``,
  prefetch 1024). The queue is filled first (confirms, at most 1000 unconfirmed) through a
  connection of the benchmark's own — timed apart as ``fill`` — then timed: from
  ``TestClient(app)`` entering (the app starts) until ``drain()`` returns with every message
  handled and acknowledged, and the block has closed (the app stopped). 10,000 is 39
  bulks and 16 messages: on RabbitMQ the last 16 wait out the 1 s ``flush_interval``, which
  ``drain()`` hands over at once on the memory broker — part of what a test suite feels.
* ``rpc``: 1,000 ``client.call``s to an RPC route, one after another (what a test does),
  timed from the first call to the last reply, the app already running.

Wall time is what a test suite feels; CPU is this process's (the memory broker runs in it,
RabbitMQ does not: its CPU is not counted). Prints one line per broker and scenario, then
the ratios. Not a test: nothing is asserted but that every message arrived.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BODY, DEFAULT_URL

from trioworker import App, Message
from trioworker.amqp import BasicProperties, connect
from trioworker.testing import MemoryBroker, TestClient

MESSAGES = 10_000
CALLS = 1_000
WINDOW = 1_000


@dataclass
class Timing:
    wall: float
    cpu: float
    fill: float = 0.0


async def fill(url: str, queue: str, count: int) -> None:
    """Declare ``queue`` and put ``count`` persistent messages in it (confirmed)."""
    props = BasicProperties(content_type="application/json", delivery_mode=2)
    async with connect(url) as conn, conn.channel() as channel:
        await channel.queue_declare(queue, durable=True)
        await channel.confirm_select()
        for _ in range(count):
            await channel.publish(BODY, routing_key=queue, properties=props)
            await channel.wait_for_confirms(WINDOW)
        await channel.wait_for_confirms(0)


async def delete(url: str, queue: str) -> None:
    async with connect(url) as conn, conn.channel() as channel:
        await channel.queue_delete(queue)


async def bulk(url: str, broker: str | MemoryBroker) -> Timing:
    queue = f"tw-bench-testing-{secrets.token_hex(4)}"
    started_fill = time.perf_counter()
    await fill(url, queue, MESSAGES)
    filled = time.perf_counter() - started_fill
    app = App(name="bench-testing", prefetch=1024, grace_period=5)
    handled = 0

    @app.amqp.consume(queue, bulk_size=256, flush_interval=1.0)
    async def handle(messages: list[Message]) -> None:
        nonlocal handled
        handled += len(messages)

    wall, cpu = time.perf_counter(), time.process_time()
    async with TestClient(app, broker=broker, drain_timeout=120) as client:
        await client.drain()
    timing = Timing(time.perf_counter() - wall, time.process_time() - cpu, filled)
    if handled != MESSAGES:
        raise RuntimeError(f"bulk: {handled} of {MESSAGES} messages handled")
    await delete(url, queue)
    return timing


async def rpc(url: str, broker: str | MemoryBroker) -> Timing:
    queue = f"tw-bench-testing-rpc-{secrets.token_hex(4)}"
    app = App(name="bench-testing-rpc", grace_period=5)

    @app.amqp.rpc(queue, declare=True)
    async def echo(message: Message) -> Any:
        return message.json()

    async with TestClient(app, broker=broker) as client:
        await client.call(queue, 0)  # the client's connection and reply consumer
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(CALLS):
            if await client.call(queue, i) != i:
                raise RuntimeError("rpc: a wrong reply")
        timing = Timing(time.perf_counter() - wall, time.process_time() - cpu)
    await delete(url, queue)
    return timing


async def on_memory(scenario: Callable[[str, Any], Awaitable[Timing]]) -> Timing:
    memory = MemoryBroker()
    async with memory.running():
        return await scenario(memory.url, memory)


async def on_rabbitmq(scenario: Callable[[str, Any], Awaitable[Timing]], url: str) -> Timing:
    return await scenario(url, url)


def line(broker: str, scenario: str, count: int, timings: list[Timing]) -> float:
    wall = statistics.median(t.wall for t in timings)
    cpu = statistics.median(t.cpu for t in timings)
    fill_s = statistics.median(t.fill for t in timings)
    extra = f"  (fill {fill_s:.2f} s, not counted)" if fill_s else ""
    print(
        f"{scenario:5} {broker:9} {count:6d} in {wall:6.3f} s wall  {count / wall:9.0f}/s  "
        f"cpu {cpu:6.3f} s ({cpu / count * 1e6:6.1f} µs each){extra}"
    )
    return wall


async def main(url: str, rounds: int) -> None:
    results: dict[tuple[str, str], list[Timing]] = {}
    for _ in range(rounds):
        for name, scenario in (("bulk", bulk), ("rpc", rpc)):
            results.setdefault((name, "memory"), []).append(await on_memory(scenario))
            results.setdefault((name, "rabbitmq"), []).append(await on_rabbitmq(scenario, url))
    print(f"median of {rounds} rounds, alternating; RabbitMQ at {url.split('@')[-1]}")
    for name, count in (("bulk", MESSAGES), ("rpc", CALLS)):
        memory = line("memory", name, count, results[(name, "memory")])
        real = line("rabbitmq", name, count, results[(name, "rabbitmq")])
        print(f"{name:5} memory is {real / memory:.1f}x faster than RabbitMQ (wall)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="the RabbitMQ to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.url, args.rounds)
