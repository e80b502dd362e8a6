"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio

from trioworker.amqp import Consumer, Delivery

T = TypeVar("T")

#: Upper bound for things that must happen (generous: CI machines are slow).
MUST_HAPPEN = 10.0
#: How long we watch for something that must *not* happen.
QUIET = 1.0


def with_query(url: str, **options: object) -> str:
    """``url`` with ``options`` added to its query string."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(options)) if q)
    return urlunsplit(parts._replace(query=query))


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def with_vhost(url: str, vhost_path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + vhost_path))


async def take(consumer: Consumer, count: int, within: float = MUST_HAPPEN) -> list[Delivery]:
    """The next ``count`` deliveries of ``consumer``; fails if they do not arrive in time."""
    deliveries: list[Delivery] = []
    with trio.fail_after(within):
        while len(deliveries) < count:
            deliveries.append(await consumer.__anext__())
    return deliveries


async def nothing_more(consumer: Consumer, wait: float = QUIET) -> bool:
    """True if no delivery arrives within ``wait`` seconds."""
    with trio.move_on_after(wait):
        await consumer.__anext__()
        return False
    return True


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float = MUST_HAPPEN,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until ``accept(result)``; return that result, or fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s; last value: {value!r}")
        await trio.sleep(interval)
