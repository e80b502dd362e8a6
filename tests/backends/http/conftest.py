"""Fixtures for HTTP tests: apps on port 0 (tests run in parallel) and a real HTTP client.

An HTTP-only app never dials the broker, so ``make_app`` points its apps at a port where
nothing listens: a test passes without a broker, and would see a broker problem in /health
if the AMQP backend started anyway. Tests about the broker pass ``amqp_url`` and run the
AMQP backend with ``app.amqp.enable()``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import broker_address
from trioworker import App, open_app

#: Upper bound for things that must happen (generous: CI machines are slow).
MUST_HAPPEN = 15.0


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def no_broker_url() -> str:
    """An AMQP URL where no broker answers."""
    return f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"


@pytest.fixture
def make_app(no_broker_url: str, unique_name: Callable[..., str]) -> Callable[..., App]:
    """``make_app(**App options)``: port 0, no broker, a unique name, grace 5 s."""

    def make(**options: Any) -> App:
        options.setdefault("amqp_url", no_broker_url)
        options.setdefault("name", unique_name("http"))
        options.setdefault("grace_period", 5.0)
        options.setdefault("http_port", 0)
        return App(**options)

    return make


@pytest.fixture(scope="session")
def broker_host_port(amqp_url: str) -> tuple[str, int]:
    """(host, port) of the test broker, for the TCP proxy."""
    return broker_address(amqp_url)


def client_for(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app.http.url, timeout=MUST_HAPPEN)


@contextlib.asynccontextmanager
async def serving(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` and yield an HTTP client pointed at its bound port."""
    async with open_app(app), client_for(app) as client:
        yield client


async def wait_serving(app: App) -> None:
    """Wait until ``app.http`` listens (it starts in the background on a running app)."""
    with trio.fail_after(MUST_HAPPEN):
        while True:
            if app.http.serving:
                return
            await trio.sleep(0.01)
