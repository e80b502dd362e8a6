"""The trioworker app of the ``startup`` benchmark: one route, one message per call.

``trioworker run startup_app:app --app-dir benchmarks``; the counterpart of
``startup_faststream_app.py``. The handler tells the harness it ran (``_handled.py``); the
harness measures from the launch of the command to that line, then the idle RSS.
"""

from __future__ import annotations

import os

from _handled import HandledWriter

from trioworker import App, Message

app = App(prefetch=1024, name="bench-startup")  # the URL: $TRIOWORKER_AMQP_URL
report = HandledWriter()


@app.amqp.consume(os.environ.get("BENCH_QUEUE", "trioworker-bench-startup"))
async def handle(messages: list[Message]) -> None:
    report.handled(len(messages))
