"""Nameko 2.x on the wire: its exchange and queue names, its JSON, its error envelope.

Everything here is read from nameko 2.14.1 (``nameko/rpc.py``, ``events.py``,
``exceptions.py``, ``standalone/events.py``); a name that differs by one character is a
service that never hears from the other side, so they are spelled in this one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Literal

from ...amqp import NoRouteError
from ...amqp import RemoteError as AMQPRemoteError
from ..amqp import Exchange
from ._kombu_json import NAMEKO_JSON

__all__ = [
    "BAD_REQUEST_PATH",
    "NAMEKO_JSON",
    "REPLY_QUEUE_TTL_MS",
    "RPC_EXCHANGE",
    "HandlerType",
    "IncorrectSignature",
    "MalformedRequest",
    "MethodNotFound",
    "RemoteError",
    "UnknownService",
    "event_exchange",
    "event_queue_name",
    "remote_error",
    "reply_queue_name",
    "rpc_queue_name",
    "serialize_error",
]

HandlerType = Literal["service_pool", "singleton", "broadcast"]

#: ``nameko-rpc``: where every RPC request and reply goes (a topic exchange, durable).
RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)
#: ``x-expires`` of a caller's reply queue (``RPC_REPLY_QUEUE_TTL``): gone 5 minutes after
#: its consumer, so a caller that died leaves nothing behind for long.
REPLY_QUEUE_TTL_MS = 300_000


def event_exchange(service: str) -> Exchange:
    """``{service}.events``: a durable topic exchange, as ``get_event_exchange`` declares
    it (``auto_delete`` off: Nameko's ``AUTO_DELETE_EVENT_EXCHANGES`` is unset by default,
    and a mismatch would be a 406 for whoever declares second)."""
    return Exchange(f"{service}.events", type="topic", durable=True)


def event_queue_name(
    source: str,
    event_type: str,
    handler_type: HandlerType,
    service: str,
    method: str,
    broadcast_identifier: str | None,
) -> str:
    """The queue ``EventHandler.setup`` consumes: per service method (``service_pool``),
    one for everybody (``singleton``), or per instance (``broadcast``)."""
    if handler_type == "service_pool":
        return f"evt-{source}-{event_type}--{service}.{method}"
    if handler_type == "singleton":
        return f"evt-{source}-{event_type}"
    return f"evt-{source}-{event_type}--{service}.{method}-{broadcast_identifier}"


def rpc_queue_name(service: str) -> str:
    """``rpc-{service}``, bound to ``nameko-rpc`` with ``{service}.*``."""
    return f"rpc-{service}"


def reply_queue_name(service: str, routing_key: str) -> str:
    """``rpc.reply-{service}-{uuid}``, bound to ``nameko-rpc`` with the uuid."""
    return f"rpc.reply-{service}-{routing_key}"


# ----------------------------------------------------------------- errors


class RemoteError(AMQPRemoteError):
    """The Nameko method raised: what Nameko's ``serialize`` sent of it.

    A :class:`trioworker.RemoteError` too (``type`` is ``exc_type``, ``message`` is
    ``value``), so one ``except`` covers both kinds of RPC. ``exc_path`` is the exception's
    module path (``"builtins.ValueError"``, ``"nameko.exceptions.MethodNotFound"``).
    """

    def __init__(
        self, exc_type: str, value: str, *, exc_path: str = "", exc_args: Iterable[Any] = ()
    ) -> None:
        super().__init__(exc_type, value)
        self.exc_type = exc_type
        self.value = value
        self.exc_path = exc_path
        self.exc_args = list(exc_args)


class UnknownService(NoRouteError):
    """No Nameko service of that name listens: the request came back unroutable."""

    def __init__(self, service: str) -> None:
        super().__init__(f"Unknown service `{service}`: no queue is bound to nameko-rpc for it")
        self.service = service


class BadRequest(Exception):
    """A request our RPC methods refuse; sent to the caller as Nameko's class of it."""


class MethodNotFound(BadRequest):
    """No ``@app.nameko.rpc`` method of that name (Nameko's ``MethodNotFound``)."""


class MalformedRequest(BadRequest):
    """The body is not ``{"args": [...], "kwargs": {...}}`` in JSON."""


class IncorrectSignature(BadRequest):
    """The arguments do not fit the method's signature."""


#: Nameko turns errors with these paths back into its own classes (``deserialize_to_instance``),
#: so a Nameko caller can ``except MethodNotFound`` our refusals.
BAD_REQUEST_PATH: dict[type[BaseException], str] = {
    MethodNotFound: "nameko.exceptions.MethodNotFound",
    MalformedRequest: "nameko.exceptions.MalformedRequest",
    IncorrectSignature: "nameko.exceptions.IncorrectSignature",
}


def _safe(value: Any) -> Any:
    """``safe_for_serialization``: strings as they are, containers walked, the rest str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {_safe(k): _safe(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_safe(v) for v in value]
    try:
        return str(value)
    except Exception:
        return "[__unicode__ failed]"


def serialize_error(exc: BaseException) -> dict[str, Any]:
    """Nameko's error envelope for ``exc``: ``exc_type``, ``exc_path``, ``exc_args``,
    ``value`` — the same fields ``nameko.exceptions.serialize`` writes, no traceback."""
    cls = type(exc)
    path = BAD_REQUEST_PATH.get(cls)
    if path is None:
        module = inspect.getmodule(cls)
        path = f"{module.__name__ if module else cls.__module__}.{cls.__name__}"
    return {
        "exc_type": cls.__name__,
        "exc_path": path,
        "exc_args": [_safe(arg) for arg in exc.args],
        "value": _safe(exc),
    }


def remote_error(error: Any) -> RemoteError:
    """The :class:`RemoteError` for a reply's ``error`` field (any shape: a peer may send
    less than Nameko does)."""
    if not isinstance(error, dict):
        return RemoteError("RemoteError", str(error))
    args = error.get("exc_args")
    return RemoteError(
        str(error.get("exc_type") or "RemoteError"),
        str(error.get("value") or ""),
        exc_path=str(error.get("exc_path") or ""),
        exc_args=args if isinstance(args, list) else (),
    )
