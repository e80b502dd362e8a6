"""Fixtures for the fault tests: unique queues that are deleted at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import trio

from tests.support import rabbitmqctl

# A private RabbitMQ node for the session (memory alarms, a short consumer_timeout), started
# only if a test asks for it: see tests/support/private_node.py.
from tests.support.private_node import private_node  # noqa: F401
from trioworker.amqp import AMQPError, connect

TEARDOWN_TIMEOUT = 20.0


class Queues:
    """Hands out unique queue names; every one of them is deleted at teardown."""

    def __init__(self, unique_name: Callable[..., str]) -> None:
        self._unique_name = unique_name
        self.names: list[str] = []

    def new(self, prefix: str = "q") -> str:
        name = self._unique_name(prefix)
        self.names.append(name)
        return name

    async def delete_all(self, url: str, vhost: str) -> None:
        leftover = list(dict.fromkeys(self.names))
        self.names.clear()
        if not leftover:
            return
        with trio.move_on_after(TEARDOWN_TIMEOUT):
            try:
                async with connect(url, connection_name="tw-test-faults-teardown") as conn:
                    channel = await conn.open_channel()
                    for name in list(leftover):
                        await channel.queue_delete(name)  # a missing queue is not an error
                        leftover.remove(name)
            except AMQPError:
                pass
        if leftover:
            await rabbitmqctl.delete_queues_async(leftover, vhost)


@pytest.fixture
async def queues(
    amqp_url: str, amqp_vhost: str, unique_name: Callable[..., str]
) -> AsyncIterator[Queues]:
    registry = Queues(unique_name)
    try:
        yield registry
    finally:
        with trio.CancelScope(shield=True):
            await registry.delete_all(amqp_url, amqp_vhost)


@pytest.fixture
def app_name(unique_name: Callable[..., str]) -> str:
    """A unique app name: the app's connection is ``"<app_name>:default"`` on the broker."""
    return unique_name("app")
