"""One trioworker app with a route of every kind: AMQP bulk consumer, RPC, HTTP, SSE, timer.

    python examples/service.py [--url AMQP_URL] [--http-port 8080] [--sse-url URL]

- ``POST /orders`` (JSON body) publishes the order to the ``service.orders`` queue;
- ``@app.amqp.consume`` handles orders in bulks of up to 50 (or after 0.5 s), rejecting
  (dead-lettering, if the queue had a DLX) those with a non-positive quantity;
- ``@app.amqp.rpc("service.add")`` answers ``[1, 2, 3]`` with ``{"sum": 6}``;
- ``@app.sse.consume`` reads a Server-Sent Events stream in bulks of 10;
- ``@app.every(1.0)`` counts ticks;
- ``GET /stats`` shows the counters, ``GET /health`` and ``GET /metrics`` are built in.

SIGINT / SIGTERM stops it gracefully. Each counter change is printed, so a supervisor (or
the test suite, ``tests/test_service_example.py``) can follow what happened.
"""

from __future__ import annotations

import argparse
import logging

import trio

from trioworker import App, Event, Message, Request

ORDERS = "service.orders"


def build(amqp_url: str, http_port: int, sse_url: str) -> App:
    app = App(amqp_url, http_port=http_port, name="service-example")

    @app.on_startup
    async def start(app: App) -> None:
        app["stats"] = {"orders": 0, "rejected": 0, "events": 0, "ticks": 0}

    @app.http.post("/orders")
    async def new_order(request: Request) -> dict[str, str]:
        order = await request.json()  # malformed JSON: 400
        await app.amqp.publish(order, routing_key=ORDERS)  # with a publisher confirm
        return {"status": "queued"}

    @app.http.get("/stats")
    async def stats(request: Request) -> dict[str, int]:
        return dict(app["stats"])

    @app.amqp.consume(ORDERS, bulk_size=50, flush_interval=0.5, declare=True)
    async def handle_orders(messages: list[Message]) -> None:
        for m in messages:
            if m.json().get("qty", 0) <= 0:
                m.reject(requeue=False)
                app["stats"]["rejected"] += 1
            else:
                app["stats"]["orders"] += 1
        print("stats", app["stats"], flush=True)

    @app.amqp.rpc("service.add")
    async def add(message: Message) -> dict[str, int]:
        return {"sum": sum(message.json())}

    @app.sse.consume(sse_url, bulk_size=10, flush_interval=0.5)
    async def on_events(events: list[Event]) -> None:
        app["stats"]["events"] += len(events)
        print("stats", app["stats"], flush=True)

    @app.every(1.0)
    async def tick(app: App) -> None:
        app["stats"]["ticks"] += 1

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--sse-url", default="http://127.0.0.1:8000/events")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = build(args.url, args.http_port, args.sse_url)
    trio.run(app.serve)
    print("stopped", app["stats"], flush=True)


if __name__ == "__main__":
    main()
