"""The worker the failover test runs as real processes (``trioworker run``): one bulk route
on a quorum queue of the cluster, recording every bulk it handled.

Configured by the environment (each worker is a fresh process):

- ``TRIOWORKER_AMQP_URL``: the cluster's URLs, comma-separated (each worker its own order);
- ``CLUSTER_TEST_QUEUE``: the quorum queue (declared by the test with the same
  :func:`queue` description, redeclared here: ``declare=True`` must agree with it);
- ``CLUSTER_TEST_RESULTS``: a directory; each worker appends one line of message ids per
  handled bulk to ``handled-<pid>.txt``, after the work and before the ack (one
  ``os.write`` per line: a killed worker leaves whole lines);
- ``CLUSTER_TEST_SLEEP``: seconds a bulk takes; while the file ``<results>/hold``
  exists, bulks wait (the test holds the workers while a node restarts, so that messages
  are left — and held unacknowledged — for the second kill);
- ``CLUSTER_TEST_PREFETCH`` and ``CLUSTER_TEST_BULK``: the route's window and bulk size.
"""

from __future__ import annotations

import os

import trio

from trioworker import App, Message, Queue

#: Returns to the queue before a message is dead-lettered: far more than the tests'
#: failovers (two kills, three restarts) can cost a message (each returns once what a
#: worker held unacknowledged).
DELIVERY_LIMIT = 10


def queue(name: str) -> Queue:
    """The test queue: quorum, a delivery limit, at-least-once dead-lettering."""
    return Queue(name, kind="quorum", dead_letter=f"{name}.dlq", delivery_limit=DELIVERY_LIMIT)


def _record(results: str, line: str) -> None:
    path = os.path.join(results, f"handled-{os.getpid()}.txt")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def make_app() -> App:
    app = App(
        name="tw-cluster-worker", prefetch=int(os.environ.get("CLUSTER_TEST_PREFETCH", "300"))
    )
    results = os.environ.get("CLUSTER_TEST_RESULTS", ".")
    hold = os.path.join(results, "hold")
    pause = float(os.environ.get("CLUSTER_TEST_SLEEP", "0.02"))

    @app.amqp.consume(
        [queue(os.environ.get("CLUSTER_TEST_QUEUE", "tw-cluster-unset"))],
        bulk_size=int(os.environ.get("CLUSTER_TEST_BULK", "100")),
        flush_interval=0.2,
        declare=True,
    )
    async def handle(messages: list[Message]) -> None:
        await trio.sleep(pause)
        while os.path.exists(hold):  # noqa: ASYNC110, ASYNC240 - the test's file, polled
            await trio.sleep(0.05)
        _record(results, " ".join(m.body.decode() for m in messages))

    return app


app = make_app()
