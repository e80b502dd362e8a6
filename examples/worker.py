"""An example worker: real messages through a bulk route, with per-message decisions.

``bash scripts/run-example.sh`` installs what is missing, then serves this app with the
command line, as a service would be run::

    trioworker run worker:app --app-dir examples

Settings come from the environment, like every app's under ``trioworker run``:
``$TRIOWORKER_AMQP_URL`` (default: the local broker, guest/guest) and, for this example only,
``$EXAMPLE_ORDERS``: how many orders to publish (2000). Extra arguments of the script go to
``trioworker run`` (``--log-format json``, ``--log-level debug``).

What happens:

1. the route declares (``declare=True``) a queue private to this run, and its dead-letter
   queue, before it consumes;
2. once the app is up (``on_started``: the broker is connected, the route consumes), it
   publishes the orders with publisher confirms — one in 500 is not JSON, one in a hundred
   has a negative quantity;
3. the route handles them 100 at a time: valid orders are acknowledged, orders with a
   negative quantity are rejected (dead-lettered) by the handler, non-JSON bodies are
   rejected by ``m.json()`` itself — only that message, the rest of the bulk goes on;
4. once the handler has seen every order, the ``on_started`` hook — still running, the job
   is what it does — waits until the broker has every decision (the queue empty, the
   dead-letter queue holding the rejected ones), deletes the queues and asks for a graceful
   stop (``app.shutdown(exit_code=...)``); an ``on_shutdown`` hook prints the summary. The
   process exits by itself, as after a SIGTERM: with status 0 if every count matches, 1 if
   not.

``TRIOWORKER_AMQP_URL=memory:// bash scripts/run-example.sh`` runs the same job on the
in-memory broker (docs/memory-broker.md): no RabbitMQ at all. The checks go through the
app's broker while it runs, which is why they are not in the ``on_shutdown`` hook: by then
the connections are closed (and an in-memory broker is gone).

One worker process: under ``--workers N`` each worker would publish its own orders, and the
supervisor restarts a worker that stops by itself.
"""

from __future__ import annotations

import json
import logging
import os
import time

import trio

from trioworker import App, InvalidMessageBody, Message, Queue, amqp

log = logging.getLogger("example")

#: Orders published at the same time: their confirms overlap instead of costing one round
#: trip each.
PUBLISHERS = 50


def order(i: int) -> tuple[bytes, str]:
    """Order ``i``'s body and what should become of it."""
    if i % 500 == 499:
        return b"<order id=%d/>" % i, "not_json"
    if i % 100 == 10:
        return json.dumps({"order": i, "qty": -1}).encode(), "negative"
    return json.dumps({"order": i, "qty": i % 5 + 1}).encode(), "ok"


def build_app(count: int) -> App:
    name = f"trioworker-example-orders-{os.getpid()}"  # private to this run
    orders = Queue(name, dead_letter=f"{name}.dead")
    app = App(prefetch=500, grace_period=10, name="trioworker-example")
    app["stats"] = {"ok": 0, "negative": 0, "not_json": 0, "bulks": 0}
    expected = {"ok": 0, "negative": 0, "not_json": 0}
    for i in range(count):
        expected[order(i)[1]] += 1

    @app.on_started
    async def run_job(app: App) -> None:
        started = time.perf_counter()
        app["seen_all"] = trio.Event()  # set by the handler

        async def publish(lane: int) -> None:
            for i in range(lane, count, PUBLISHERS):
                await app.amqp.publish(order(i)[0], routing_key=name)  # confirmed

        async with trio.open_nursery() as nursery:
            for lane in range(PUBLISHERS):
                nursery.start_soon(publish, lane)
        print(f"published {count} orders in {time.perf_counter() - started:.3f} s", flush=True)
        await app["seen_all"].wait()
        app["elapsed"] = time.perf_counter() - started
        # The last bulk's decisions reach the broker just after its handler returned.
        with trio.move_on_after(30):
            while True:
                left, dead = await queue_counts(app.amqp.url)
                if left == 0 and dead >= expected["negative"] + expected["not_json"]:
                    break
                await trio.sleep(0.05)
        app["left"], app["dead"] = left, dead = await queue_counts(app.amqp.url, delete=True)
        stats = app["stats"]
        app["ok"] = ok = (
            stats == {**expected, "bulks": stats["bulks"]}
            and left == 0
            and dead == expected["negative"] + expected["not_json"]
        )
        # Graceful, as after a SIGTERM; `trioworker run` exits 1 if the counts are wrong.
        app.shutdown(exit_code=0 if ok else 1)

    async def queue_counts(url: str, *, delete: bool = False) -> tuple[int, int]:
        async with amqp.connect(url) as conn, conn.channel() as channel:
            left = (await channel.queue_declare(name, passive=True)).message_count
            dead = (await channel.queue_declare(f"{name}.dead", passive=True)).message_count
            if delete:
                await channel.queue_delete(name)
                await channel.queue_delete(f"{name}.dead")
        return left, dead

    @app.amqp.consume([orders], bulk_size=100, flush_interval=0.2, declare=True)
    async def handle(messages: list[Message]) -> None:
        stats = app["stats"]
        stats["bulks"] += 1
        for m in messages:
            try:
                body = m.json()
            except InvalidMessageBody:
                stats["not_json"] += 1  # already marked REJECT by json()
                continue
            if body["qty"] < 0:
                m.reject(requeue=False)  # beats the route's on_success=ACK
                stats["negative"] += 1
            else:
                stats["ok"] += 1
        if sum(stats[k] for k in expected) >= count:
            app["seen_all"].set()  # this bulk's decisions are sent when it returns

    @app.on_shutdown
    async def report(app: App) -> None:
        stats = app["stats"]
        left, dead = app.get("left", -1), app.get("dead", -1)
        print(
            f"handled {count} orders in {stats['bulks']} bulks in "
            f"{app.get('elapsed', 0.0):.3f} s: "
            f"{stats['ok']} acked, {stats['negative']} rejected by the handler, "
            f"{stats['not_json']} not JSON"
        )
        print(f"queue left with {left} messages, dead-letter queue with {dead}")
        ok = app.get("ok", False)  # False if the job did not finish (a signal stopped it)
        if not ok:
            log.error("the counts do not match: expected %s", expected)
        print("OK" if ok else "FAILED: counts do not match", flush=True)

    return app


app = build_app(int(os.environ.get("EXAMPLE_ORDERS") or 2000))
