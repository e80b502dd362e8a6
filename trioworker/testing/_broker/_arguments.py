"""Queue arguments: which a queue type takes, their validation, what they make it do.

RabbitMQ 3.10 validates the arguments it knows when a queue is created: one that the
queue's type does not take is a 406 (*invalid arg 'x-delivery-limit' for queue 'q' in
vhost '/' of queue type rabbit_classic_queue*), a value of the wrong type or range another
(*invalid arg 'x-message-ttl' ...: {value_negative,-1}*) — the texts below are RabbitMQ's.
Re-declarations are checked by :mod:`._equivalence`.

The memory broker departs in one way, on purpose: an ``x-`` argument it does not implement
(priorities, lazy mode, streams, ``reject-publish-dlx``) or does not know is refused with
540 NOT_IMPLEMENTED naming it, rather than accepted and silently not applied (RabbitMQ
ignores arguments it does not know). Arguments that only place or tune a queue on a
cluster (locators, initial group size, in-memory limits) have no observable effect on one
in-memory node and are accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ._equivalence import type_name
from ._errors import ChannelError, not_implemented, precondition_failed, resource

__all__ = ["QueueSettings", "queue_settings"]

#: The arguments each queue type takes (RabbitMQ 3.10's ``queue_arguments`` capability).
_TAKES = {
    "classic": frozenset(
        {
            "x-expires",
            "x-message-ttl",
            "x-dead-letter-exchange",
            "x-dead-letter-routing-key",
            "x-max-length",
            "x-max-length-bytes",
            "x-max-priority",
            "x-overflow",
            "x-queue-mode",
            "x-single-active-consumer",
            "x-queue-type",
            "x-queue-master-locator",
        }
    ),
    "quorum": frozenset(
        {
            "x-expires",
            "x-message-ttl",
            "x-dead-letter-exchange",
            "x-dead-letter-routing-key",
            "x-max-length",
            "x-max-length-bytes",
            "x-single-active-consumer",
            "x-queue-type",
            "x-quorum-initial-group-size",
            "x-delivery-limit",
            "x-max-in-memory-length",
            "x-max-in-memory-bytes",
            "x-overflow",
            "x-queue-leader-locator",
            "x-dead-letter-strategy",
        }
    ),
}
#: Every argument some queue type takes (streams' included): the ones RabbitMQ knows.
_KNOWN = (
    _TAKES["classic"]
    | _TAKES["quorum"]
    | {
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
    }
)
_NOT_IMPLEMENTED = {
    "x-max-priority": "priority queues (x-max-priority)",
    "x-max-age": "streams (x-max-age)",
    "x-stream-max-segment-size-bytes": "streams (x-stream-max-segment-size-bytes)",
    "x-initial-cluster-size": "streams (x-initial-cluster-size)",
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


def _invalid(key: str, name: str, vhost: str, reason: str) -> ChannelError:
    return precondition_failed(
        f"invalid arg '{key}' for {resource('queue', name, vhost)}: {reason}"
    )


def _integer(args: Mapping[str, Any], key: str, name: str, vhost: str, minimum: int) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(key, name, vhost, f'"expected integer, got {type_name(value)}"')
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


def _kind(arguments: Mapping[str, Any], name: str, vhost: str) -> str:
    kind = _string(arguments, "x-queue-type", name, vhost) or "classic"
    if kind == "stream":
        raise not_implemented("streams (x-queue-type=stream)")
    if kind not in _TAKES:
        raise _invalid("x-queue-type", name, vhost, f"\"unsupported queue type '{kind}'\"")
    return kind


def _check_known(arguments: Mapping[str, Any], kind: str, name: str, vhost: str) -> None:
    """RabbitMQ's per-type check first (406), then what the memory broker lacks (540)."""
    for key in arguments:
        if key in _KNOWN and key not in _TAKES[kind]:
            raise precondition_failed(
                f"invalid arg '{key}' for {resource('queue', name, vhost)} of queue type "
                f"rabbit_{kind}_queue"
            )
    for key in arguments:
        if key in _NOT_IMPLEMENTED:
            raise not_implemented(_NOT_IMPLEMENTED[key])
        if key.startswith("x-") and key not in _KNOWN:
            raise not_implemented(f"the queue argument {key!r}")


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
    kind = _kind(arguments, name, vhost)
    if kind == "quorum":
        where = resource("queue", name, vhost)
        for bad, prop in (
            (not durable, "non-durable"),
            (exclusive, "exclusive-owner"),
            (auto_delete, "auto-delete"),
        ):
            if bad:
                raise precondition_failed(f"invalid property '{prop}' for {where}")
    _check_known(arguments, kind, name, vhost)
    dlx = arguments.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, str | bytes | bytearray):
        raise precondition_failed(
            f"invalid type '{type_name(dlx)}' for arg 'x-dead-letter-exchange' in "
            f"{resource('queue', name, vhost)}"
        )
    dlx = _string(arguments, "x-dead-letter-exchange", name, vhost)
    dlrk = _string(arguments, "x-dead-letter-routing-key", name, vhost)
    if dlrk is not None and dlx is None:
        raise _invalid("x-dead-letter-routing-key", name, vhost, "routing_key_but_no_dlx_defined")
    mode = _string(arguments, "x-queue-mode", name, vhost)
    if mode == "lazy":
        raise not_implemented("lazy queues (x-queue-mode=lazy)")
    if mode not in (None, "default"):
        raise _invalid("x-queue-mode", name, vhost, f"\"unsupported queue mode '{mode}'\"")
    overflow = _string(arguments, "x-overflow", name, vhost) or "drop-head"
    if overflow not in ("drop-head", "reject-publish", "reject-publish-dlx"):
        raise _invalid("x-overflow", name, vhost, "invalid_overflow")
    if overflow == "reject-publish-dlx":
        raise not_implemented("x-overflow=reject-publish-dlx")
    strategy = _string(arguments, "x-dead-letter-strategy", name, vhost)
    if strategy not in (None, "at-most-once", "at-least-once"):
        raise _invalid("x-dead-letter-strategy", name, vhost, "invalid_dlx_strategy")
    single = arguments.get("x-single-active-consumer")
    if single is not None and not isinstance(single, bool):
        raise _invalid(
            "x-single-active-consumer", name, vhost, f"{{unacceptable_type,{type_name(single)}}}"
        )
    ttl = _integer(arguments, "x-message-ttl", name, vhost, 0)
    expires = _integer(arguments, "x-expires", name, vhost, 1)
    # RabbitMQ 3.10 does not check a quorum queue's delivery limit: a non-integer is none.
    limit = arguments.get("x-delivery-limit")
    return QueueSettings(
        kind=kind,
        message_ttl=None if ttl is None else ttl / 1000,
        expires=None if expires is None else expires / 1000,
        dead_letter_exchange=dlx,
        dead_letter_routing_key=dlrk,
        max_length=_integer(arguments, "x-max-length", name, vhost, 0),
        max_length_bytes=_integer(arguments, "x-max-length-bytes", name, vhost, 0),
        reject_publish=overflow == "reject-publish",
        delivery_limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        single_active_consumer=bool(single),
    )
