"""A real worker process for the signal tests: ``trio.run(app.serve)`` on one bulk route.

::

    python tests/faults/worker_app.py --queue Q --results FILE [--started FILE]
        [--url URL] [--name NAME] [--bulk-size 50] [--sleep 0.5] [--grace-period 10]

Message bodies are ids (ASCII digits). For every bulk the handler appends one line of ids
to ``--started`` when it begins (if given), sleeps ``--sleep`` seconds, then appends the
same line to ``--results``: a line in the results file means the handler COMPLETED that
bulk (its acknowledgement follows). Each line is written with one ``write`` and fsynced, so
a killed worker leaves whole lines behind (readers ignore a trailing partial one).

Logs go to stderr; the exit status is 0 after a graceful stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from trioworker import App, Message

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build_app(args: argparse.Namespace) -> App:
    app = App(args.url, prefetch=args.prefetch, grace_period=args.grace_period, name=args.name)

    @app.amqp.consume(args.queue, bulk_size=args.bulk_size, flush_interval=args.flush_interval)
    async def handle(messages: list[Message]) -> None:
        line = " ".join(m.body.decode() for m in messages)
        if args.started:
            append_line(args.started, line)
        await trio.sleep(args.sleep)
        append_line(args.results, line)

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--results", required=True, help="ids of completed bulks, a line each")
    parser.add_argument("--started", help="ids of started bulks, a line each")
    parser.add_argument("--url", default=os.environ.get("TRIOWORKER_AMQP_URL", DEFAULT_URL))
    parser.add_argument("--name", default="tw-test-faults-worker")
    parser.add_argument("--bulk-size", type=int, default=50)
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds per bulk")
    parser.add_argument("--grace-period", type=float, default=10.0)
    parser.add_argument("--prefetch", type=int, default=1024)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(build_app(args).serve)
    logging.getLogger("worker_app").info("worker_app: serve() returned, exiting 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
