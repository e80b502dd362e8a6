"""Queue and exchange declarations: validating arguments, and RabbitMQ's equivalence rule.

RabbitMQ never changes an existing queue: a second ``Queue.Declare`` must be *equivalent*
(same ``durable`` and ``auto_delete``, same values for the arguments it knows, the same
exclusive owner) or it fails with 406 and a text naming the first difference, which
``backends/amqp/_declare.py`` parses. Arguments it knows are validated on creation (406
*invalid arg*), unknown ones are ignored.

The memory broker departs in one way, on purpose: an ``x-`` argument it does not implement
(priorities, lazy mode, streams, ...) is refused with 540 NOT_IMPLEMENTED naming it, rather
than accepted and silently not applied. Arguments that only place or tune a queue on a
cluster (locators, initial group size, in-memory limits) have no observable effect on one
in-memory node and are accepted.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from collections.abc import Mapping
from typing import Any

from ._errors import ChannelError, not_implemented, precondition_failed, resource

__all__ = ["QueueSettings", "assert_equivalent", "queue_settings", "type_class", "value_text"]

#: Arguments compared on a re-declare (RabbitMQ's ``declare_args`` keys).
COMPARED = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-dead-letter-strategy",
)
#: Accepted without effect: placement and memory tuning, nothing a client can observe.
_NO_EFFECT = frozenset(
    {
        "x-queue-master-locator",
        "x-queue-leader-locator",
        "x-quorum-initial-group-size",
        "x-initial-cluster-size",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
    }
)
_IMPLEMENTED = frozenset(
    {
        "x-message-ttl",
        "x-expires",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-max-length",
        "x-max-length-bytes",
        "x-overflow",
        "x-queue-type",
        "x-queue-mode",
        "x-delivery-limit",
        "x-single-active-consumer",
        "x-dead-letter-strategy",
    }
)
_NOT_IMPLEMENTED = {
    "x-max-priority": "priority queues (x-max-priority)",
    "x-max-age": "streams (x-max-age)",
    "x-stream-max-segment-size-bytes": "streams (x-stream-max-segment-size-bytes)",
}


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSettings:
    """What a queue's arguments make it do (times in seconds)."""

    kind: str = "classic"
    message_ttl: float | None = None
    expires: float | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    reject_publish: bool = False
    delivery_limit: int | None = None
    single_active_consumer: bool = False


def type_name(value: Any) -> str:
    """The AMQP field type RabbitMQ would name for ``value`` as pamqp encodes it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if -128 <= value <= 127:
            return "byte"
        if -32768 <= value <= 32767:
            return "short"
        if 0 <= value <= 65535:
            return "unsignedshort"
        if -(2**31) <= value < 2**31:
            return "signedint"
        if 0 <= value < 2**32:
            return "unsignedint"
        return "long"
    return {
        str: "longstr",
        float: "float",
        dict: "table",
        list: "array",
        bytearray: "binary",
        bytes: "binary",
        decimal.Decimal: "decimal",
        datetime.datetime: "timestamp",
        type(None): "void",
    }.get(type(value), type(value).__name__)


def type_class(value: Any) -> str:
    """The class RabbitMQ compares values by: every integer width is one class."""
    name = type_name(value)
    return (
        "int"
        if name in ("byte", "short", "unsignedshort", "signedint", "unsignedint", "long")
        else name
    )


def value_text(value: Any) -> str:
    """RabbitMQ's rendering of a field value in an *inequivalent arg* reply text."""
    if value is None:
        return "none"
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return f"the value '{shown}' of type '{type_name(value)}'"


def _same(a: Any, b: Any) -> bool:
    return type_class(a) == type_class(b) and a == b


def assert_equivalent(
    kind: str,
    name: str,
    vhost: str,
    fields: Mapping[str, tuple[Any, Any]],
    existing: Mapping[str, Any],
    declared: Mapping[str, Any],
    keys: tuple[str, ...] = COMPARED,
) -> None:
    """406 for the first field, then argument, that differs between ``existing`` and
    ``declared`` (``fields``: name -> (current, declared))."""
    where = resource(kind, name, vhost)
    for field, (current, wanted) in fields.items():
        if current != wanted:
            raise precondition_failed(
                f"inequivalent arg '{field}' for {where}: received {_plain(wanted)} but "
                f"current is {_plain(current)}"
            )
    for key in keys:
        current, wanted = existing.get(key), declared.get(key)
        if current is None and wanted is None:
            continue
        if current is None or wanted is None or not _same(current, wanted):
            raise precondition_failed(
                f"inequivalent arg '{key}' for {where}: received {value_text(wanted)} but "
                f"current is {value_text(current)}"
            )


def _plain(value: Any) -> str:
    return f"'{str(value).lower()}'" if isinstance(value, bool) else f"'{value}'"


def _invalid(key: str, name: str, vhost: str, reason: str) -> ChannelError:
    return precondition_failed(
        f"invalid arg '{key}' for {resource('queue', name, vhost)}: {reason}"
    )


def _integer(args: Mapping[str, Any], key: str, name: str, vhost: str, minimum: int) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(key, name, vhost, f"{{unacceptable_type,{type_name(value)}}}")
    if value < minimum:
        reason = "value_zero" if value == 0 else "value_negative"
        raise _invalid(key, name, vhost, f"{{{reason},{value}}}")
    return value


def _string(args: Mapping[str, Any], key: str, name: str, vhost: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        raise _invalid(key, name, vhost, f"{{unacceptable_type,{type_name(value)}}}")
    return value


def queue_settings(
    name: str,
    vhost: str,
    arguments: Mapping[str, Any],
    *,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
) -> QueueSettings:
    """Validate a new queue's arguments as RabbitMQ does; 540 for what is not implemented."""
    for key in arguments:
        if key in _NOT_IMPLEMENTED:
            raise not_implemented(_NOT_IMPLEMENTED[key])
        if key.startswith("x-") and key not in _IMPLEMENTED and key not in _NO_EFFECT:
            raise not_implemented(f"the queue argument {key!r}")
    kind = _string(arguments, "x-queue-type", name, vhost) or "classic"
    if kind == "stream":
        raise not_implemented("streams (x-queue-type=stream)")
    if kind not in ("classic", "quorum"):
        raise _invalid("x-queue-type", name, vhost, f"unsupported queue type '{kind}'")
    if kind == "quorum":
        where = resource("queue", name, vhost)
        for bad, prop in ((not durable, "non-durable"), (exclusive, "exclusive-owner")):
            if bad:
                raise precondition_failed(f"invalid property '{prop}' for {where}")
        if auto_delete:
            raise precondition_failed(f"invalid property 'auto-delete' for {where}")
    mode = _string(arguments, "x-queue-mode", name, vhost)
    if mode == "lazy":
        raise not_implemented("lazy queues (x-queue-mode=lazy)")
    if mode not in (None, "default"):
        raise _invalid("x-queue-mode", name, vhost, f"{{unacceptable_value,{mode}}}")
    overflow = _string(arguments, "x-overflow", name, vhost) or "drop-head"
    if overflow == "reject-publish-dlx":
        raise not_implemented("x-overflow=reject-publish-dlx")
    if overflow not in ("drop-head", "reject-publish"):
        raise _invalid("x-overflow", name, vhost, f"{{unacceptable_value,{overflow}}}")
    strategy = _string(arguments, "x-dead-letter-strategy", name, vhost)
    if strategy not in (None, "at-most-once", "at-least-once"):
        raise _invalid("x-dead-letter-strategy", name, vhost, f"{{unacceptable_value,{strategy}}}")
    dlx = _string(arguments, "x-dead-letter-exchange", name, vhost)
    dlrk = _string(arguments, "x-dead-letter-routing-key", name, vhost)
    if dlrk is not None and dlx is None:
        raise _invalid("x-dead-letter-routing-key", name, vhost, "routing_key_but_no_dlx_defined")
    single = arguments.get("x-single-active-consumer")
    if single is not None and not isinstance(single, bool):
        raise _invalid(
            "x-single-active-consumer", name, vhost, f"{{unacceptable_type,{type_name(single)}}}"
        )
    ttl = _integer(arguments, "x-message-ttl", name, vhost, 0)
    expires = _integer(arguments, "x-expires", name, vhost, 1)
    limit = _integer(arguments, "x-delivery-limit", name, vhost, 0)
    return QueueSettings(
        kind=kind,
        message_ttl=None if ttl is None else ttl / 1000,
        expires=None if expires is None else expires / 1000,
        dead_letter_exchange=dlx,
        dead_letter_routing_key=dlrk,
        max_length=_integer(arguments, "x-max-length", name, vhost, 0),
        max_length_bytes=_integer(arguments, "x-max-length-bytes", name, vhost, 0),
        reject_publish=overflow == "reject-publish",
        # RabbitMQ applies a delivery limit to quorum queues only (classic ones ignore it).
        delivery_limit=limit if kind == "quorum" else None,
        single_active_consumer=bool(single),
    )
