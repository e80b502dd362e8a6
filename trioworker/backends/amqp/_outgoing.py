"""What ``app.amqp.publish`` sends: the body encoded and the properties it implies.

Persistent by default (``delivery_mode=2``): a message published into a durable queue
should survive a broker restart unless the caller says otherwise — RabbitMQ's own default
(no ``delivery_mode``) is transient, which surprised users whose durable queues came back
empty.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from ...amqp import BasicProperties
from ...codecs import Codec, get_codec
from ._publisher import Body, encode_body

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["outgoing_message", "publish_within"]

#: AMQP ``delivery_mode`` values.
PERSISTENT, TRANSIENT = 2, 1


def _replace(props: BasicProperties, **changes: Any) -> BasicProperties:
    # pamqp's properties are plain objects: build a new one rather than mutate the caller's.
    return BasicProperties(**{**dict(props), **changes})


def _expiration(ttl: float) -> str:
    """RabbitMQ's per-message TTL: milliseconds as a decimal string."""
    if ttl < 0:
        raise ValueError("ttl must be 0 or more seconds")
    return str(round(ttl * 1000))


def outgoing_message(
    body: Body | Any,
    *,
    properties: BasicProperties | None,
    codec: str | Codec | None,
    persistent: bool,
    headers: Mapping[str, Any] | None,
    ttl: float | None,
    priority: int | None,
) -> tuple[bytes, BasicProperties]:
    """Encode ``body`` and build its properties.

    Without ``codec``: ``bytes`` as they are, ``str`` UTF-8, ``dict``/``list`` JSON. With
    one, the codec encodes any value and sets ``content_type``/``content_encoding``.
    Explicit ``properties`` win over what the codec implies; ``headers`` are merged into
    theirs; ``persistent``, ``ttl`` (seconds, sent as ``expiration`` in ms) and
    ``priority`` set their fields unless ``properties`` already set them.
    """
    if priority is not None and not 0 <= priority <= 255:
        raise ValueError("priority must be between 0 and 255")
    if codec is None:
        encoded, props = encode_body(body, properties)
        props = props or BasicProperties()
    else:
        chosen = get_codec(codec)
        encoded = chosen.encode(body)
        props = properties or BasicProperties()
        if props.content_type is None:
            props = _replace(props, content_type=chosen.content_type)
        if props.content_encoding is None and chosen.content_encoding is not None:
            props = _replace(props, content_encoding=chosen.content_encoding)
    changes: dict[str, Any] = {}
    if props.delivery_mode is None:
        changes["delivery_mode"] = PERSISTENT if persistent else TRANSIENT
    if headers:
        changes["headers"] = {**(props.headers or {}), **headers}
    if ttl is not None and props.expiration is None:
        changes["expiration"] = _expiration(ttl)
    if priority is not None and props.priority is None:
        changes["priority"] = priority
    if changes:
        props = _replace(props, **changes)
    return encoded, props


async def publish_within(
    timeout: float | None,  # noqa: ASYNC109 - a deadline for two steps
    supervisor: Callable[[], Awaitable[Supervisor]],
    body: bytes,
    *,
    routing_key: str,
    exchange: str,
    properties: BasicProperties,
    mandatory: bool,
) -> None:
    """Publish on the connection ``supervisor()`` gives, within ``timeout`` seconds for the
    whole: waiting for the connection (down, refusing the login, ...) and the confirm.

    ``TimeoutError`` says why when it can: the connection's last error while it is down.
    """
    sup: Supervisor | None = None
    deadline = math.inf if timeout is None else trio.current_time() + timeout
    with trio.move_on_at(deadline):
        sup = await supervisor()
        await sup.publisher.publish(
            body,
            routing_key=routing_key,
            exchange=exchange,
            properties=properties,
            mandatory=mandatory,
        )
        return
    down = sup is not None and not sup.up and sup.last_error is not None
    why = f"; the connection is down: {sup.last_error}" if down and sup else ""
    if sup is not None and sup.publishing.blocked:  # a memory or disk alarm
        conn = sup.publisher.connection
        reason = conn.blocked_reason if conn is not None else None
        why = f"; the broker blocks publishing ({reason or 'no reason given'})"
    raise TimeoutError(
        f"app.amqp.publish(): no connection or no confirm within {timeout} s "
        f"(the message may still have reached the broker){why}"
    )
