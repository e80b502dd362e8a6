"""The worker of the ``cluster`` benchmark's failover phase, run as ``trioworker run
cluster_app:app --app-dir benchmarks`` by ``bench_cluster.py``.

Configured by the environment (the harness sets it):

- ``TRIOWORKER_AMQP_URL``: the cluster's three URLs, comma-separated, in the order the
  worker tries them (it starts on the first and fails over to the next);
- ``BENCH_QUEUE``: the quorum queue, declared with ``declare=True`` like a production
  route (the redeclare after a failover is part of what a failover costs);
- ``BENCH_RECORDS``: a file; every handled message appends one line
  ``<time.monotonic()> <node> <body> <redelivered 0|1>``.

``time.monotonic()`` is ``CLOCK_MONOTONIC``, one clock for every process of the machine, so
the harness compares these stamps with the instant it sent ``kill -9``. ``<node>`` is the
``host:port`` the route's connection is open to when the handler runs: a message handled in
the microseconds between the kill and the worker reading the end of its socket still says
the dead node, and the harness does not count it as handled on a surviving node.

A regular file, not a pipe: the harness blocks in a node's restart for seconds while
messages keep coming, and a full pipe would stall the worker's event loop and skew the very
thing measured. One ``os.write`` of a short line per message (``O_APPEND``): lines stay
whole.

One message per handler call (``bulk_size=1``): the first message after a failover is
handled, and stamped, the moment it arrives, not when a bulk fills or flushes.
"""

from __future__ import annotations

import os
import time

from trioworker import App, Message, Queue

QUEUE = os.environ.get("BENCH_QUEUE", "trioworker-bench-cluster-failover")
RECORDS = os.environ.get("BENCH_RECORDS")
if not RECORDS:
    raise RuntimeError("$BENCH_RECORDS is not set: run this app through bench_cluster.py")

app = App(prefetch=100, name="bench-cluster")
_records = os.open(RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _node() -> bytes:
    """``host:port`` of the node the default connection is open to (``-`` while down)."""
    for supervisor in app.amqp.supervisors:
        return (supervisor.node or "-").encode()
    return b"-"


@app.amqp.consume([Queue(QUEUE, kind="quorum")], bulk_size=1, declare=True)
async def handle(messages: list[Message]) -> None:
    for m in messages:
        line = b"%.6f %s %s %d\n" % (time.monotonic(), _node(), m.body, m.redelivered)
        os.write(_records, line)
