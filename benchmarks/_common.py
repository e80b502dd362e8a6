"""Shared helpers for the benchmark scripts (stdlib only).

Every system script (``bench_trioworker.py``, ``bench_framework.py``, ``bench_aiopika.py``,
``bench_pika.py``, ``bench_asyncworker.py``, ``bench_faststream.py``) runs in its own
interpreter / virtualenv and imports this module from its own directory, so it must not
depend on anything but the standard library.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PREFETCH = 1024
DEFAULT_ACK_EVERY = 256
DEFAULT_WINDOW = 1000
DEFAULT_WARMUP = 50_000
DEFAULT_BULK_SIZE = 256
DEFAULT_FLUSH_INTERVAL = 1.0
BODY_SIZE = 256
CONTENT_TYPE = "application/json"


def make_body(size: int = BODY_SIZE) -> bytes:
    """A JSON object of exactly ``size`` bytes, identical for every system and message."""
    head = b'{"event":"bench","id":123456789,"payload":"'
    tail = b'"}'
    pad = size - len(head) - len(tail)
    if pad < 0:
        raise ValueError(f"body size {size} is too small")
    body = head + b"x" * pad + tail
    json.loads(body)  # stays valid JSON
    return body


BODY = make_body()


def rss_mb() -> float:
    """Resident set size of this process in MiB, from ``/proc/self/status`` (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def now() -> float:
    return time.perf_counter()


def cpu() -> float:
    """CPU seconds this process has used (all its threads): the client's own cost.

    On a machine where the broker shares the cores, a msg/s figure can be the broker's limit
    rather than the client's; the CPU a client spends per message is its own either way.
    """
    return time.process_time()


@dataclass
class Result:
    """The one JSON line each system script prints on stdout."""

    system: str
    version: str
    scenario: str
    messages: int
    seconds: float
    rss_start_mb: float
    rss_end_mb: float
    cpu_seconds: float | None = None  # process CPU over the same window as ``seconds``
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def msg_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def emit(self) -> None:
        data = asdict(self)
        extra = data.pop("extra")
        data["seconds"] = round(self.seconds, 4)
        data["msg_per_s"] = round(self.msg_per_s, 1)
        data["rss_start_mb"] = round(self.rss_start_mb, 2)
        data["rss_end_mb"] = round(self.rss_end_mb, 2)
        if self.cpu_seconds is None:
            del data["cpu_seconds"]
        else:
            data["cpu_seconds"] = round(self.cpu_seconds, 4)
            if self.messages:
                data["cpu_us_per_msg"] = round(self.cpu_seconds / self.messages * 1e6, 2)
        data.update(extra)
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()


def parse_args(
    description: str,
    modes: tuple[str, ...],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The arguments every system script takes; ``configure`` adds a script's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", choices=modes)
    parser.add_argument("queue", help="name of the (existing, durable) queue")
    parser.add_argument("count", type=int, help="number of messages to consume / publish")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH)
    parser.add_argument(
        "--ack-every", type=int, default=DEFAULT_ACK_EVERY, help="multiple=True ack every N"
    )
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help="max unconfirmed publishes"
    )
    parser.add_argument(
        "--delivery-mode",
        type=int,
        choices=(1, 2),
        default=2,
        help="publish: 1 transient, 2 persistent",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help="rss modes: the RSS baseline is taken after this many messages",
    )
    parser.add_argument(
        "--bulk-size", type=int, default=DEFAULT_BULK_SIZE, help="bulk routes: messages per bulk"
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL,
        help="bulk routes: seconds before a partial bulk is handed over",
    )
    if configure is not None:
        configure(parser)
    args = parser.parse_args()
    if args.count <= 0:
        parser.error("count must be positive")
    return args
