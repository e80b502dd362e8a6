"""RabbitMQ's equivalence rule for re-declarations, and how it names field values.

RabbitMQ never changes an existing queue or exchange: a second declaration must be
*equivalent* — same flags, same values for the arguments it compares — or it fails with
406 and a text naming the first difference, which ``backends/amqp/_declare.py`` parses::

    inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but
    current is '1000'
    inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value
    'quorum' of type 'longstr' but current is none

Values compare by *type class* and value: every integer width is one class, so ``1000``
sent as a short and as a long are the same.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from typing import Any

from ._errors import precondition_failed, resource

__all__ = ["COMPARED", "assert_equivalent", "type_class", "type_name"]

#: Queue arguments compared on a re-declare (RabbitMQ 3.10's ``declare_args`` keys).
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
_INTEGER_TYPES = ("byte", "short", "unsignedshort", "signedint", "unsignedint", "long")
_TYPE_NAMES: dict[type, str] = {
    str: "longstr",
    float: "float",
    dict: "table",
    list: "array",
    bytearray: "binary",
    bytes: "binary",
    decimal.Decimal: "decimal",
    datetime.datetime: "timestamp",
    type(None): "void",
}


def type_name(value: Any) -> str:
    """The AMQP field type RabbitMQ names for ``value`` as pamqp encodes it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        for name, low, high in (
            ("byte", -128, 127),
            ("short", -32768, 32767),
            ("unsignedshort", 0, 65535),
            ("signedint", -(2**31), 2**31 - 1),
            ("unsignedint", 0, 2**32 - 1),
        ):
            if low <= value <= high:
                return name
        return "long"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def type_class(value: Any) -> str:
    """The class RabbitMQ compares values by: every integer width is one class."""
    name = type_name(value)
    return "int" if name in _INTEGER_TYPES else name


def _plain(value: Any) -> str:
    return f"'{str(value).lower()}'" if isinstance(value, bool) else f"'{value}'"


def _typed(value: Any) -> str:
    if value is None:
        return "none"
    return f"the value {_plain(value)} of type '{type_name(value)}'"


def assert_equivalent(
    kind: str,
    name: str,
    vhost: str,
    fields: Mapping[str, tuple[Any, Any]],
    existing: Mapping[str, Any],
    declared: Mapping[str, Any],
    keys: tuple[str, ...] = COMPARED,
) -> None:
    """406 for the first flag (``fields``: name -> (current, declared)), then argument,
    that differs between the existing declaration and this one."""
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
        if current is not None and wanted is not None:
            if type_class(current) == type_class(wanted) and current == wanted:
                continue
            shown = f"received {_plain(wanted)} but current is {_plain(current)}"
        else:  # one of them absent: RabbitMQ shows the typed value
            shown = f"received {_typed(wanted)} but current is {_typed(current)}"
        raise precondition_failed(f"inequivalent arg '{key}' for {where}: {shown}")
