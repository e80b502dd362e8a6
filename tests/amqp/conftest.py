"""Fixtures for the AMQP client's integration tests against the real RabbitMQ.

* ``conn``: an open :class:`~trioworker.amqp.Connection` with a unique ``connection_name``.
* ``channel``: a channel on ``conn``.
* ``resources``: hands out unique queue/exchange names and deletes them at teardown through
  a fresh connection (fast), falling back to rabbitmqctl for queues if that fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from tests.conftest import broker_address
from tests.support import rabbitmqctl
from trioworker.amqp import AMQPError, Channel, Connection, connect

TEARDOWN_TIMEOUT = 20.0


class Resources:
    """Unique names for queues and exchanges a test creates; all deleted at teardown."""

    def __init__(self, unique_name: Callable[..., str]) -> None:
        self._unique_name = unique_name
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, prefix: str = "q") -> str:
        name = self._unique_name(prefix)
        self.queues.append(name)
        return name

    def exchange(self, prefix: str = "x") -> str:
        name = self._unique_name(prefix)
        self.exchanges.append(name)
        return name

    async def delete_all(self, url: str, vhost: str) -> None:
        queues = list(dict.fromkeys(self.queues))
        exchanges = list(dict.fromkeys(self.exchanges))
        self.queues.clear()
        self.exchanges.clear()
        if not queues and not exchanges:
            return
        leftover = list(queues)
        failure: BaseException | None = None
        with trio.move_on_after(TEARDOWN_TIMEOUT):
            try:
                async with connect(url, connection_name="tw-test-teardown") as conn:
                    try:
                        channel = await conn.open_channel()
                        for name in queues:
                            # Deleting a missing queue (or exchange) is not an error.
                            await channel.queue_delete(name)
                            leftover.remove(name)
                        for name in exchanges:
                            await channel.exchange_delete(name)
                    except AMQPError as exc:  # caught inside: connect() wraps body errors
                        failure = exc
            except AMQPError as exc:
                failure = exc
        if leftover:
            await rabbitmqctl.delete_queues_async(leftover, vhost)
        if failure is not None:
            raise failure


@pytest.fixture
async def resources(
    amqp_url: str, amqp_vhost: str, unique_name: Callable[..., str]
) -> AsyncIterator[Resources]:
    res = Resources(unique_name)
    try:
        yield res
    finally:
        with trio.CancelScope(shield=True):
            await res.delete_all(amqp_url, amqp_vhost)


@pytest.fixture(scope="session")
def broker_host_port(amqp_url: str) -> tuple[str, int]:
    """(host, port) of the test broker, for the proxies."""
    return broker_address(amqp_url)


@pytest.fixture
def conn_name(unique_name: Callable[..., str]) -> str:
    return unique_name("conn")


@pytest.fixture
async def conn(amqp_url: str, conn_name: str) -> AsyncIterator[Connection]:
    async with connect(amqp_url, connection_name=conn_name) as connection:
        yield connection


@pytest.fixture
async def channel(conn: Connection) -> AsyncIterator[Channel]:
    ch = await conn.open_channel()
    try:
        yield ch
    finally:
        with contextlib.suppress(AMQPError):
            await ch.close()
