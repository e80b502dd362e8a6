"""Fixtures for the framework's broker tests (a pytest plugin the root conftest loads).

``broker`` is a helper connection (trioworker's AMQP client, already tested on its own) for
setting the stage and inspecting the outcome: declare queues, fill them, count ready
messages, drain them. Every queue it hands out is deleted at teardown. ``make_app`` builds
an :class:`App` with a unique name (its connection shows as ``<name>:default`` in
``rabbitmqctl list_connections``) and a short grace period.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from tests.conftest import broker_address
from tests.support import rabbitmqctl
from tests.support.helpers import eventually
from trioworker import App
from trioworker.amqp import (
    AMQPError,
    BasicProperties,
    Channel,
    Connection,
    Delivery,
    NotFoundError,
    connect,
)

__all__ = ["MUST_HAPPEN", "Broker", "eventually"]

#: Upper bound for things that must happen (generous: CI machines are slow).
MUST_HAPPEN = 15.0


class Broker:
    """Stage-setting and inspection through a separate connection."""

    def __init__(self, conn: Connection, unique_name: Callable[..., str]) -> None:
        self.conn = conn
        self._unique_name = unique_name
        self._channel: Channel | None = None
        self._publisher: Channel | None = None
        self.queues: list[str] = []

    def name(self, prefix: str = "q") -> str:
        """A unique queue name, deleted at teardown (whether or not it gets created)."""
        name = self._unique_name(prefix)
        self.queues.append(name)
        return name

    async def channel(self) -> Channel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self.conn.open_channel()
        return self._channel

    async def queue(
        self, prefix: str = "q", *, dead_letter_to: str | None = None, durable: bool = False
    ) -> str:
        """Declare a new queue; ``dead_letter_to`` gives it a DLX routing to that queue."""
        name = self.name(prefix)
        await self.declare(name, dead_letter_to=dead_letter_to, durable=durable)
        return name

    async def declare(
        self, name: str, *, dead_letter_to: str | None = None, durable: bool = False
    ) -> None:
        arguments: dict[str, Any] = {}
        if dead_letter_to is not None:
            arguments = {
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead_letter_to,
            }
        channel = await self.channel()
        await channel.queue_declare(name, durable=durable, arguments=arguments)

    async def publish(
        self, queue: str, *bodies: bytes, properties: BasicProperties | None = None
    ) -> None:
        """Publish with confirms: on return the broker has every message."""
        if self._publisher is None or self._publisher.is_closed:
            self._publisher = await self.conn.open_channel()
            await self._publisher.confirm_select()
        confirmations = [
            await self._publisher.publish(body, routing_key=queue, properties=properties)
            for body in bodies
        ]
        for confirmation in confirmations:
            await confirmation.wait()

    async def ready(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting delivered-and-unacknowledged ones)."""
        channel = await self.channel()
        reply = await channel.queue_declare(queue, passive=True)
        return reply.message_count or 0

    async def exists(self, queue: str) -> bool:
        try:
            await self.ready(queue)
        except NotFoundError:
            return False
        return True

    async def drain(self, queue: str) -> list[Delivery]:
        """Take (and acknowledge) every ready message of ``queue``."""
        channel = await self.channel()
        deliveries = []
        while (delivery := await channel.basic_get(queue, no_ack=True)) is not None:
            deliveries.append(delivery)
        return deliveries

    async def wait_ready(self, queue: str, count: int, within: float = MUST_HAPPEN) -> None:
        """Wait until ``queue`` has exactly ``count`` ready messages."""
        await eventually(lambda: self.ready(queue), lambda n: n == count, within)

    async def delete_all(self, vhost: str) -> None:
        names = list(dict.fromkeys(self.queues))
        self.queues.clear()
        leftover = list(names)
        with trio.move_on_after(10), contextlib.suppress(AMQPError):
            channel = await self.conn.open_channel()
            for name in names:
                await channel.queue_delete(name)
                leftover.remove(name)
        if leftover:
            await rabbitmqctl.delete_queues_async(leftover, vhost)


@pytest.fixture
async def broker(
    amqp_url: str, amqp_vhost: str, unique_name: Callable[..., str]
) -> AsyncIterator[Broker]:
    async with connect(amqp_url, connection_name=unique_name("helper")) as conn:
        helper = Broker(conn, unique_name)
        try:
            yield helper
        finally:
            with trio.CancelScope(shield=True):
                await helper.delete_all(amqp_vhost)


@pytest.fixture
def make_app(amqp_url: str, unique_name: Callable[..., str]) -> Callable[..., App]:
    def make(**options: Any) -> App:
        options.setdefault("amqp_url", amqp_url)
        options.setdefault("name", unique_name("app"))
        options.setdefault("grace_period", 5.0)
        return App(**options)

    return make


@pytest.fixture(scope="session")
def broker_host_port(amqp_url: str) -> tuple[str, int]:
    """(host, port) of the test broker, for the TCP proxy."""
    return broker_address(amqp_url)
