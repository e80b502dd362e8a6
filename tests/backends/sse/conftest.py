"""Fixtures for the SSE tests: a real SSE server (hypercorn, port 0) and apps (no broker)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from trioworker import App, Event

from ._server import SSEServer, running_server

#: Upper bound for things that must happen (generous: CI machines are slow).
MUST_HAPPEN = 15.0


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def sse_server() -> AsyncIterator[SSEServer]:
    async with running_server() as server:
        yield server


@pytest.fixture
def make_app(unique_name: Callable[..., str]) -> Callable[..., App]:
    """An App with a unique name and a short grace period. An SSE-only app never dials the
    broker, so its ``amqp_url`` is a port where nothing listens."""

    def make(**options: Any) -> App:
        options.setdefault("amqp_url", f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F")
        options.setdefault("name", unique_name("sse"))
        options.setdefault("grace_period", 5.0)
        return App(**options)

    return make


class Bulks:
    """What a handler got: bulks in call order (with times), and a way to wait for them."""

    def __init__(self) -> None:
        self.bulks: list[list[Event]] = []
        self.times: list[float] = []
        self._changed = trio.Event()

    def add(self, bulk: list[Event]) -> None:
        self.bulks.append(list(bulk))
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    @property
    def events(self) -> list[Event]:
        return [e for bulk in self.bulks for e in bulk]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    @property
    def data(self) -> list[str]:
        return [e.data for e in self.events]

    async def wait_for(self, count: int, within: float = MUST_HAPPEN) -> None:
        with trio.fail_after(within):
            while len(self.events) < count:
                await self._changed.wait()


@pytest.fixture
def bulks() -> Bulks:
    return Bulks()
