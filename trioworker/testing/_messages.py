"""``make_message``: a real :class:`~trioworker.Message` for a plain unit test of a handler.

A handler is a function of ``list[Message]``; testing its logic should not need a broker,
an app or the framework's internals. ``make_message`` builds the very class routes hand
out, around a :class:`~trioworker.amqp.Delivery` whose properties are encoded the way the
broker sends them (so ``properties``, ``headers`` and ``json()`` behave exactly as in
production, a body that is not JSON included). Nothing is settled anywhere: the decision a
handler takes is only recorded on the message, for the test to read.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ..amqp import BasicProperties, Delivery
from ..backends.amqp._message import ATTEMPT_HEADER, Message
from ..backends.amqp._outgoing import outgoing_message
from ..codecs import Codec

__all__ = ["MessageStub", "encode_message", "make_message"]

#: Delivery tags of made messages: distinct, so a handler keying on them sees distinct ones.
_tags = itertools.count(1)


class MessageStub(Message):
    """A :class:`~trioworker.Message` made by :func:`make_message`: the same class, plus
    what a unit test reads after the handler ran.

    ``decision`` (inherited) is the handler's per-message call — ``Actions.ACK`` after
    ``accept()``, ``REQUEUE``/``REJECT`` after ``reject()``, ``RETRY`` after ``retry()``,
    ``REJECT`` after a ``json()`` that failed — or ``None``: the route's default applies.
    """

    __slots__ = ()
    __test__ = False  # not a pytest test class, whatever a test module imports it as

    @property
    def retry_delay(self) -> float | None:
        """The ``delay`` passed to :meth:`retry` (``None``: the route's policy decides, or
        :meth:`retry` was not called — see :attr:`decision`)."""
        delay: float | None = getattr(self, "_retry_delay", None)
        return delay

    @property
    def decided(self) -> bool:
        """True once the handler took a per-message decision."""
        return self.decision is not None


def encode_message(
    body: Any,
    *,
    properties: BasicProperties | None = None,
    codec: str | Codec | None = None,
    persistent: bool = True,
    headers: Mapping[str, Any] | None = None,
    ttl: float | None = None,
    priority: int | None = None,
) -> tuple[bytes, BasicProperties]:
    """``body`` and its properties as ``app.amqp.publish`` would send them — and any other
    value (a number, ``None``, ``True``) as JSON, where the app's publish wants a codec:
    a test publishing ``5`` means the JSON ``5``."""
    if codec is None and not isinstance(body, bytes | bytearray | memoryview | str | dict | list):
        codec = "json"
    encoded, props = outgoing_message(
        body,
        properties=properties,
        codec=codec,
        persistent=persistent,
        headers=headers,
        ttl=ttl,
        priority=priority,
    )
    return bytes(encoded), props


def make_message(
    body: Any,
    *,
    headers: Mapping[str, Any] | None = None,
    redelivered: bool = False,
    routing_key: str = "",
    exchange: str = "",
    properties: BasicProperties | None = None,
    queue: str = "test",
    attempt: int = 1,
    codec: str | Codec | None = None,
    persistent: bool = True,
    ttl: float | None = None,
    priority: int | None = None,
    delivery_tag: int | None = None,
) -> MessageStub:
    """Build the message a route would hand its handler for ``body``.

    ``body`` is encoded as ``app.amqp.publish`` encodes it: ``bytes`` as they are, ``str``
    UTF-8, ``dict``/``list`` JSON (``content_type`` application/json), anything with
    ``codec=``. ``headers`` are merged into ``properties``' headers; ``attempt`` (≥ 1) is
    the retry attempt the message is on (what ``message.attempt`` says, carried in the
    ``x-trioworker-attempt`` header as a retried copy carries it). ``routing_key``
    defaults to ``queue``'s name as a publish to the default exchange has it.

    The message belongs to no channel: ``accept()``, ``reject()`` and ``retry()`` only
    record the decision (``retry()`` is allowed as on a route with ``retry=``).
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an int of at least 1, got {attempt!r}")
    merged: dict[str, Any] = dict(headers or {})
    if attempt > 1:
        merged[ATTEMPT_HEADER] = attempt
    encoded, props = encode_message(
        body,
        properties=properties,
        codec=codec,
        persistent=persistent,
        headers=merged,
        ttl=ttl,
        priority=priority,
    )
    try:
        raw = props.marshal()
    except Exception as exc:  # pamqp refuses a value AMQP cannot carry
        raise ValueError(f"these properties cannot be sent over AMQP: {exc!r}") from exc
    delivery = Delivery(
        channel=1,
        consumer_tag="test",
        delivery_tag=next(_tags) if delivery_tag is None else delivery_tag,
        redelivered=redelivered,
        exchange=exchange,
        routing_key=routing_key or (queue if not exchange else ""),
        body=encoded,
        raw_properties=raw,
    )
    return MessageStub(delivery, queue)
