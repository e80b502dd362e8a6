"""asyncworker peer benchmark: a bulk route (bulk_size=256, bulk_flush_interval=1).

Run from the asyncworker virtualenv (``async-worker==0.20.2``):
    python benchmarks/bench_asyncworker.py bulk QUEUE COUNT
Prints one JSON line (see ``_common.Result``).

The app is asyncworker's own: ``App(connections=[AMQPConnection(..., prefetch=1024)])`` and
``@app.amqp.consume(routes=[queue], options=AMQPRouteOptions(bulk_size=256,
bulk_flush_interval=1))``. Its default ``on_success=ACK`` acks each message of a bulk once
the handler returned (``basic.ack`` per message, no ``multiple``). The handler reads each
message's raw body (``len(m.serialized_data)``: ``m.body`` would also decode the JSON, which
our handler does not do) and counts.

``App.run()`` blocks in ``loop.run_until_complete`` and only returns on SIGINT/SIGTERM, and
its shutdown leaves the AMQP connections open. So the script drives the same steps itself,
in its own loop: ``await app.startup()`` (connects and consumes; also starts asyncworker's
HTTP server, here on a free port), wait for the handler to see the last message, let the
acks of that bulk go out, then ``await app.shutdown()`` and close each consumer's channel
and connection (round trips: the broker has processed the acks sent before them).

Timed like ``bench_framework.py``: from just before ``app.startup()`` to the end of that
shutdown; ``handled_s`` is the time at which the handler saw the last message.
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version
from typing import Any
from urllib.parse import unquote, urlsplit

# asyncworker always serves HTTP (metrics) on 127.0.0.1:8080; a free port instead, so the
# benchmark does not collide with anything else on the machine. Read at import time.
os.environ.setdefault("ASYNCWORKER_HTTP_PORT", "0")

from _common import Result, cpu, now, parse_args, rss_mb
from asyncworker import App, RouteTypes
from asyncworker.connections import AMQPConnection
from asyncworker.options import Options
from asyncworker.rabbitmq import RabbitMQMessage
from asyncworker.routes import AMQPRouteOptions

SYSTEM = "asyncworker"


def make_app(args: Any) -> App:
    url = urlsplit(args.url)
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    if vhost != "/":
        raise SystemExit("bench_asyncworker.py: only the default vhost is supported")
    connection = AMQPConnection(
        hostname=url.hostname or "127.0.0.1",
        port=url.port or 5672,
        username=unquote(url.username or "guest"),
        password=unquote(url.password or "guest"),
        prefetch=args.prefetch,
    )
    return App(connections=[connection])


async def bulk(app: App, args: Any) -> Result:
    count: int = args.count
    seen = 0
    nbytes = 0
    handled_at = 0.0
    done = asyncio.Event()

    options = {
        Options.BULK_SIZE: args.bulk_size,
        Options.BULK_FLUSH_INTERVAL: max(1, round(args.flush_interval)),  # an int in 0.20
    }

    @app.amqp.consume(routes=[args.queue], options=AMQPRouteOptions(**options))
    async def handle(messages: list[RabbitMQMessage]) -> None:
        nonlocal seen, nbytes, handled_at
        for m in messages:
            nbytes += len(m.serialized_data)
        seen += len(messages)
        if seen >= count:
            handled_at = now()
            done.set()

    rss_start = rss_mb()
    start, cpu_start = now(), cpu()
    await app.startup()
    await done.wait()
    rss_end = rss_mb()
    # The handler of the last bulk has returned or is about to: asyncworker then acks its
    # messages, each ``basic_client_ack`` writing its frame before its first suspension.
    # Give those steps a few loop turns before anything else goes on the wire.
    for _ in range(3):
        await asyncio.sleep(0)
    await app.shutdown()
    for consumer in app[RouteTypes.AMQP_RABBITMQ]["consumers"]:
        connection = consumer.queue.connection
        if connection.channel is not None and connection.channel.is_open:
            await connection.channel.close()  # close-ok: the acks before it were processed
        if connection._protocol is not None:
            # aioamqp reports even a clean close to this callback, which asyncworker logs as
            # a connection error (and its consumer loop would reconnect a second later).
            connection._protocol._on_error_callback = None
        await connection.close()
    seconds, cpu_seconds = now() - start, cpu() - cpu_start

    # Consumer.start() and the flush clock loop forever: cancel them before the loop closes.
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    return Result(
        system=SYSTEM,
        version=version("async-worker"),
        scenario="route-bulk",
        messages=seen,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        extra={
            "handled_s": round(handled_at - start, 4),
            "bulk_size": args.bulk_size,
            "body_bytes": nbytes,
        },
    )


def main() -> int:
    args = parse_args(__doc__ or "", ("bulk",))
    # asyncworker's App takes ``asyncio.get_event_loop()`` (and installs its signal
    # handlers on it) when it is created: create and set the loop first.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = make_app(args)
        result = loop.run_until_complete(bulk(app, args))
    finally:
        loop.close()
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
