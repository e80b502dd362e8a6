"""The FastStream app of the ``startup`` benchmark: one subscriber, the same work.

``faststream run startup_faststream_app:app --app-dir benchmarks`` from the FastStream
virtualenv; the counterpart of ``startup_app.py``. The subscriber is the one of
``bench_faststream.py`` (default subscriber, prefetch 1024 as in the standard workload);
FastStream's defaults stay otherwise (its access log included: one message).
"""

from __future__ import annotations

import os
from typing import Any

from _handled import HandledWriter
from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker

broker = RabbitBroker(os.environ.get("BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
app = FastStream(broker)
report = HandledWriter()


@broker.subscriber(
    os.environ.get("BENCH_QUEUE", "trioworker-bench-startup"),
    channel=Channel(prefetch_count=1024),
)
async def handle(body: Any) -> None:
    report.handled(1)
