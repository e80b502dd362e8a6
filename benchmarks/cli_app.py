"""The app of the ``cli-workers`` benchmark, served by ``trioworker run cli_app:app``.

``bench_cli.py workers-N`` runs ``trioworker run cli_app:app --workers N --app-dir
benchmarks`` with ``$TRIOWORKER_AMQP_URL``, ``$BENCH_QUEUE`` and ``$BENCH_HANDLED_FIFO``
set. The route is the ``route-bulk`` one of ``bench_framework.py`` (``bulk_size=256``,
``concurrency=1``, ACK on success, prefetch 1024), with one difference: a flush interval of
0.1 s (``$BENCH_FLUSH_INTERVAL``) instead of 1 s. With two workers the queue is split
between them at the broker's whim, so each ends with a partial bulk; at 1 s its wait would
be most of the difference between one worker and two, and that is not what the scenario
measures. While messages flow a bulk fills in a few ms, long before 0.1 s.

The app does not stop by itself (under ``--workers N`` the supervisor would restart a
worker that did): it reports each bulk on the FIFO and the harness sends SIGTERM once the
count is reached, the way an operator stops a worker.
"""

from __future__ import annotations

import os

from _handled import HandledWriter

from trioworker import App, Message

QUEUE = os.environ.get("BENCH_QUEUE", "trioworker-bench-cli-workers")
FLUSH_INTERVAL = float(os.environ.get("BENCH_FLUSH_INTERVAL", "0.1"))

app = App(prefetch=1024, name="bench-cli")  # the URL: $TRIOWORKER_AMQP_URL
report = HandledWriter()


@app.amqp.consume(QUEUE, bulk_size=256, flush_interval=FLUSH_INTERVAL, concurrency=1)
async def handle(messages: list[Message]) -> None:
    nbytes = 0  # the same minimal work as every route benchmark: read each raw body
    for m in messages:
        nbytes += len(m.body)
    report.handled(len(messages))
