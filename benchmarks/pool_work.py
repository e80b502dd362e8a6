"""The CPU-bound handlers of ``bench_pools.py``, in a module of their own: a process
pool's workers import a handler by module and name, and the script that runs the benchmark
is ``__main__``, which they cannot import (docs/pools.md)."""

from __future__ import annotations

from trioworker import Message

#: Iterations of :func:`work`: about 2 ms of pure-Python CPU on the reference machine (the
#: same work for every system; each run reports what one call actually took).
ITERATIONS = 54_000


def work(body: bytes, iterations: int = ITERATIONS) -> int:
    """Pure-Python CPU work that holds the GIL (no I/O, no C extension doing it for us)."""
    acc = len(body)
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def handle(messages: list[Message]) -> None:
    """The route handler of the ``process`` and ``thread`` modes."""
    for m in messages:
        work(m.body)


async def handle_on_loop(messages: list[Message]) -> None:
    """The ``loop`` mode's handler: the same work, on the event loop."""
    for m in messages:
        work(m.body)


def noop(messages: list[Message]) -> None:
    """Does nothing: timing it through a pool measures the pool's own cost per bulk."""


async def noop_on_loop(messages: list[Message]) -> None:
    """The ``loop`` mode's no-op: awaited on the event loop."""
