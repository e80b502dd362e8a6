"""Publishing from a handler in a worker process: an outbox sent back with the decisions.

A handler running in a process pool cannot reach the app's connection. What it publishes
with :func:`publish` is encoded right there (a body that cannot be encoded fails at the
call, in the handler) and collected; the collection travels back with the bulk's
decisions, and the app publishes every message — with confirms, in order — *before* it
applies the decisions and acknowledges the bulk. A crash in between means a redelivery and
the messages published again: at least once, never lost (docs/pools.md).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ...amqp import BasicProperties
from ...codecs import Codec
from ._outgoing import outgoing_message
from ._routes import DEFAULT_CONNECTION

__all__ = ["Outgoing", "collecting", "publish", "send_outbox", "stop_collecting"]


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a worker-side handler published: encoded, waiting for the app."""

    body: bytes
    routing_key: str
    exchange: str
    properties: BasicProperties
    mandatory: bool
    connection: str
    vhost: str | None


#: The outbox of the handler call running in this (worker) process, if any.
_outbox: contextvars.ContextVar[list[Outgoing] | None] = contextvars.ContextVar(
    "trioworker_outbox", default=None
)


def collecting(outbox: list[Outgoing]) -> contextvars.Token[list[Outgoing] | None]:
    """Make :func:`publish` append to ``outbox`` (the worker, around one handler call)."""
    return _outbox.set(outbox)


def stop_collecting(token: contextvars.Token[list[Outgoing] | None]) -> None:
    """End what :func:`collecting` began."""
    _outbox.reset(token)


def publish(
    body: Any,
    routing_key: str,
    exchange: str = "",
    *,
    persistent: bool = True,
    headers: Mapping[str, Any] | None = None,
    ttl: float | None = None,
    priority: int | None = None,
    codec: str | Codec | None = None,
    properties: BasicProperties | None = None,
    mandatory: bool = False,
    connection: str = DEFAULT_CONNECTION,
    vhost: str | None = None,
) -> None:
    """Publish from a handler running in a process pool (``trioworker.pools.publish``).

    The same options as ``app.amqp.publish`` (no ``timeout``: the route's ``timeout=``
    bounds the whole call). The message is encoded now and published by the app, with a
    confirm, before the acks of the handler's bulk: see the module docstring. Outside a
    process-pool handler it raises ``RuntimeError`` (a thread handler has
    ``app.amqp.publish_sync``, async code ``await app.amqp.publish``).
    """
    outbox = _outbox.get()
    if outbox is None:
        raise RuntimeError(
            "trioworker.pools.publish() works in a handler running in a process pool; "
            "from a thread use app.amqp.publish_sync(...), from async code "
            "await app.amqp.publish(...)"
        )
    encoded, props = outgoing_message(
        body,
        properties=properties,
        codec=codec,
        persistent=persistent,
        headers=headers,
        ttl=ttl,
        priority=priority,
    )
    outbox.append(Outgoing(encoded, routing_key, exchange, props, mandatory, connection, vhost))


async def send_outbox(outbox: list[Outgoing], publish: Callable[..., Awaitable[None]]) -> None:
    """Publish (confirmed) what a worker-side handler published, in its order."""
    for message in outbox:
        await publish(
            message.body,
            message.routing_key,
            message.exchange,
            properties=message.properties,
            mandatory=message.mandatory,
            connection=message.connection,
            vhost=message.vhost,
        )
