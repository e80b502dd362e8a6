"""Fixtures for the memory broker's tests: a running broker, a client connection to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trioworker.amqp import Connection, connect
from trioworker.testing import MemoryBroker


@pytest.fixture
async def mbroker() -> AsyncIterator[MemoryBroker]:
    """A running broker of its own for the test."""
    broker = MemoryBroker()
    async with broker.running():
        yield broker


@pytest.fixture
async def conn(mbroker: MemoryBroker) -> AsyncIterator[Connection]:
    """trioworker's own client, connected to ``mbroker``."""
    async with connect(mbroker.url) as connection:
        yield connection
