"""An example worker: real messages through a bulk route, with per-message decisions.

Run it with ``bash scripts/run-example.sh`` (installs what is missing), or directly::

    python examples/worker.py [--count 2000] [--url amqp://guest:guest@127.0.0.1:5672/%2F]

What happens:

1. a startup hook declares an ``orders`` queue (private to this run) with a dead-letter
   queue, and publishes ``--count`` orders with publisher confirms — one in 500 is not
   JSON, one in a hundred has a negative quantity;
2. a bulk route handles them 100 at a time: valid orders are acknowledged, orders with a
   negative quantity are rejected (dead-lettered) by the handler, non-JSON bodies are
   rejected by ``m.json()`` itself — only that message, the rest of the bulk goes on;
3. when every order is settled the worker shuts itself down gracefully and prints what
   happened, checking the queues against its own counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import trio

from trioworker import App, InvalidMessageBody, Message, StartupError, amqp


def build_app(url: str, count: int) -> App:
    run = os.getpid()
    queue = f"trioworker-example-orders-{run}"
    dead = f"{queue}.dead"
    app = App(amqp_url=url, prefetch=500, grace_period=10, name="trioworker-example")
    app["stats"] = {"ok": 0, "negative": 0, "not_json": 0, "bulks": 0}
    app["expected"] = {"ok": 0, "negative": 0, "not_json": 0}

    @app.on_startup
    async def prepare(app: App) -> None:
        async with amqp.connect(url) as conn, conn.channel() as channel:
            await channel.queue_declare(dead, auto_delete=False)
            await channel.queue_declare(
                queue,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
            )
            await channel.confirm_select()
            started = time.perf_counter()
            for i in range(count):
                if i % 500 == 499:
                    body, kind = b"<order id=%d/>" % i, "not_json"
                elif i % 100 == 10:
                    body, kind = json.dumps({"order": i, "qty": -1}).encode(), "negative"
                else:
                    body, kind = json.dumps({"order": i, "qty": i % 5 + 1}).encode(), "ok"
                app["expected"][kind] += 1
                await channel.publish(body, routing_key=queue)
                await channel.wait_for_confirms(max_outstanding=1000)
            await channel.wait_for_confirms()
        print(f"published {count} orders in {time.perf_counter() - started:.3f} s")
        app["started"] = time.perf_counter()

    @app.amqp.consume([queue], bulk_size=100, flush_interval=0.2)
    async def handle(messages: list[Message]) -> None:
        stats = app["stats"]
        stats["bulks"] += 1
        for m in messages:
            try:
                order = m.json()
            except InvalidMessageBody:
                stats["not_json"] += 1  # already marked REJECT by json()
                continue
            if order["qty"] < 0:
                m.reject(requeue=False)  # beats the route's on_success=ACK
                stats["negative"] += 1
            else:
                stats["ok"] += 1
        if sum(stats[k] for k in ("ok", "negative", "not_json")) >= count:
            app.shutdown()  # graceful: this bulk's decisions are still sent

    @app.on_shutdown
    async def report(app: App) -> None:
        elapsed = time.perf_counter() - app.get("started", time.perf_counter())
        async with amqp.connect(url) as conn, conn.channel() as channel:
            left = (await channel.queue_declare(queue, passive=True)).message_count
            dead_letters = (await channel.queue_declare(dead, passive=True)).message_count
            await channel.queue_delete(queue)
            await channel.queue_delete(dead)
        stats, expected = app["stats"], app["expected"]
        print(
            f"handled {count} orders in {stats['bulks']} bulks in {elapsed:.3f} s: "
            f"{stats['ok']} acked, {stats['negative']} rejected by the handler, "
            f"{stats['not_json']} not JSON"
        )
        print(f"queue left with {left} messages, dead-letter queue with {dead_letters}")
        ok = (
            stats == {**expected, "bulks": stats["bulks"]}
            and left == 0
            and dead_letters == expected["negative"] + expected["not_json"]
        )
        app["ok"] = ok
        print("OK" if ok else "FAILED: counts do not match")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--url", default=amqp.default_url())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")
    app = build_app(args.url, args.count)
    try:
        trio.run(app.serve)
    except StartupError as exc:
        sys.exit(f"cannot start the worker: {exc.__cause__ or exc}")
    except amqp.AMQPConnectionError as exc:
        sys.exit(f"cannot talk to RabbitMQ: {exc}")
    sys.exit(0 if app.get("ok") else 1)


if __name__ == "__main__":
    main()
