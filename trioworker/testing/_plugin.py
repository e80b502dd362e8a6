"""trioworker's pytest plugin (entry point ``pytest11``): fixtures for testing an app.

* ``memory_broker`` — a running :class:`~trioworker.testing.MemoryBroker` for the test.
* ``trioworker_client`` — ``client = await trioworker_client(app)``: the app runs under a
  :class:`~trioworker.testing.TestClient` until the test ends; several apps may share one
  broker (``trioworker_client(app, broker=memory_broker)``).
* ``--trioworker-broker=amqp://...`` (or ``$TRIOWORKER_TEST_BROKER``) runs every
  ``trioworker_client`` of the session against that RabbitMQ instead of a fresh memory
  broker: the same tests, checked against the real thing.

The fixtures are async: they need pytest-trio (``trio_mode = true``, or
``@pytest.mark.trio`` on the tests). This module imports nothing of trioworker until a
fixture is used, so installing the package costs other test suites nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .. import App
    from ._broker import MemoryBroker
    from ._client import TestClient

__all__ = ["memory_broker", "pytest_addoption", "trioworker_broker_url", "trioworker_client"]

BROKER_ENV = "TRIOWORKER_TEST_BROKER"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trioworker")
    group.addoption(
        "--trioworker-broker",
        default=None,
        metavar="URL",
        help=(
            "run the trioworker_client fixture's apps on this RabbitMQ (amqp://...) "
            f"instead of an in-memory broker (default: ${BROKER_ENV}, else memory)"
        ),
    )


@pytest.fixture
def trioworker_broker_url(request: pytest.FixtureRequest) -> str | None:
    """The RabbitMQ URL ``trioworker_client`` uses, or ``None`` for the memory broker."""
    url: str | None = request.config.getoption("--trioworker-broker") or os.environ.get(BROKER_ENV)
    return None if url in (None, "", "memory") else url


@pytest.fixture
async def memory_broker() -> AsyncIterator[MemoryBroker]:
    """A fresh in-memory broker, running for the test."""
    from ._broker import MemoryBroker

    broker = MemoryBroker()
    async with broker.running():
        yield broker


@pytest.fixture
async def trioworker_client(
    trioworker_broker_url: str | None,
) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """``client = await trioworker_client(app, **options)``: run ``app`` under a
    :class:`TestClient` (options as its) until the test ends. An exception of the app
    fails the test."""
    import trio

    from ._client import TestClient

    stop = trio.Event()

    async def run(
        app: App, options: dict[str, Any], task_status: trio.TaskStatus[TestClient]
    ) -> None:
        async with TestClient(app, **options) as client:
            task_status.started(client)
            await stop.wait()

    async with trio.open_nursery() as nursery:

        async def start(app: App, **options: Any) -> TestClient:
            options.setdefault("broker", trioworker_broker_url)
            client: TestClient = await nursery.start(run, app, options)
            return client

        try:
            yield start
        finally:
            stop.set()
