"""Fixtures for HTTP tests: apps on port 0 (tests run in parallel) and a real HTTP client.

Every app here also runs its AMQP backend (it is always on), so these tests talk to the real
broker too; the pure routing/response unit tests need neither.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import broker_address
from trioworker import App, open_app

#: Upper bound for things that must happen (generous: CI machines are slow).
MUST_HAPPEN = 15.0


@pytest.fixture
def make_app(amqp_url: str, unique_name: Callable[..., str]) -> Callable[..., App]:
    """``make_app(**App options)``: port 0, the test broker, a unique name, grace 5 s."""

    def make(**options: Any) -> App:
        options.setdefault("amqp_url", amqp_url)
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
