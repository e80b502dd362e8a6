"""What a log line about one message carries: its queue, delivery tag and ids.

``log.warning("...", extra=message_fields(message))``: the route, the connection and the
app come from the log context of the task (``trioworker/_log_context.py``); these fields
are the message's own. Reading them never raises: a message whose properties do not decode
(that may be why it is logged) still gets its queue and delivery tag.
"""

from __future__ import annotations

from typing import Protocol

from ...amqp import AMQPError, BasicProperties

__all__ = ["message_fields"]


class _Logged(Protocol):
    """What is read of a :class:`~._message.Message` (a protocol: ``_message`` imports
    this module, so this one cannot import it back)."""

    queue: str

    @property
    def delivery_tag(self) -> int: ...

    @property
    def properties(self) -> BasicProperties: ...


def message_fields(message: _Logged) -> dict[str, object]:
    """``queue``, ``delivery_tag``, and ``message_id`` / ``correlation_id`` when set."""
    fields: dict[str, object] = {"queue": message.queue, "delivery_tag": message.delivery_tag}
    try:
        properties = message.properties
    except AMQPError:  # PropertyDecodeError: undecodable properties, the ids unknown
        return fields
    if properties.message_id:
        fields["message_id"] = properties.message_id
    if properties.correlation_id:
        fields["correlation_id"] = properties.correlation_id
    return fields
