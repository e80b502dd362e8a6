"""Envelopes: the fixed shape some peers wrap around request and reply values.

A codec turns values into bytes; an :class:`Envelope` is what a peer's protocol adds around
the values *before* they become bytes. amqp_worker (lib-python-amqp-worker) is the case in
point: its requests are ``{"data": X}`` (its handlers take a parameter named ``data``), its
replies ``{"success": true, "data": result}`` or ``{"success": false, "error": {...}}``, and
the AMQP ``type`` property of a reply says ``result`` or ``error``. Keeping the envelope
apart from the serializer lets one gzip+JSON implementation (with its bounded inflation)
serve both the bare ``gzip+json`` codec and the enveloped ``amqp_worker`` one.

The methods raise ``ValueError`` for a value of the wrong shape; :class:`~.codecs.Codec`
turns that into a ``CodecError`` naming the codec, so a malformed message fails alone.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

__all__ = ["AmqpWorkerEnvelope", "Envelope"]


class Envelope:
    """How a protocol wraps values; the base class wraps nothing (override what differs).

    ``result_type`` / ``error_type``: the AMQP ``type`` property of result / error replies
    (``None``: not set).
    """

    result_type: str | None = None
    error_type: str | None = None

    def wrap_request(self, value: Any) -> Any:
        """What a request (or a published message) carrying ``value`` holds."""
        return value

    def open_request(self, value: Any) -> Any:
        """The handler's value from a decoded request; ``ValueError`` if it is malformed."""
        return value

    def wrap_result(self, value: Any) -> Any:
        """The reply to a request whose handler returned ``value``."""
        return value

    def wrap_error(self, exc: BaseException) -> Any:
        """The reply to a request whose handler raised ``exc``."""
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}

    def open_reply(self, value: Any) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, {"type": ..., "message": ...})`` from a decoded
        reply; ``ValueError`` if it is neither."""
        return True, value


def _json_safe(value: Any) -> Any:
    """``value`` if JSON can encode it, else its ``repr()`` (amqp_worker's own fallback)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class AmqpWorkerEnvelope(Envelope):
    """amqp_worker's envelope (its ``worker_base.py``, ``response.py``, aio-pika's RPC).

    Errors are ``{"type": class name, "message": repr(exc), "args": exc.args}`` as
    amqp_worker sends them, plus ``"trace"`` (the formatted traceback) only when ``trace``
    is true: a traceback names files and lines of the service, which callers seldom need
    and should not be handed by default.
    """

    result_type = "result"
    error_type = "error"

    def __init__(self, *, trace: bool = False) -> None:
        self.trace = trace

    def __repr__(self) -> str:
        return f"AmqpWorkerEnvelope(trace={self.trace})"

    def wrap_request(self, value: Any) -> Any:
        return {"data": value}

    def open_request(self, value: Any) -> Any:
        # amqp_worker calls ``handler(**body)`` on a handler taking ``data`` only: anything
        # but an object with exactly that key fails there too (aio-pika rejects non-dicts).
        if not isinstance(value, dict):
            raise ValueError(
                'an amqp_worker request is a JSON object {"data": ...}, '
                f"got {type(value).__name__}"
            )
        if "data" not in value or len(value) != 1:
            raise ValueError(
                'an amqp_worker request is a JSON object {"data": ...}, '
                f"got the keys {sorted(map(str, value))}"
            )
        return value["data"]

    def wrap_result(self, value: Any) -> Any:
        return {"success": True, "data": value}

    def wrap_error(self, exc: BaseException) -> Any:
        error: dict[str, Any] = {
            "type": type(exc).__name__,
            "message": repr(exc),
            "args": [_json_safe(arg) for arg in exc.args],
        }
        if self.trace:
            error["trace"] = "".join(traceback.format_exception(exc))
        return {"success": False, "error": error}

    def open_reply(self, value: Any) -> tuple[bool, Any]:
        if isinstance(value, dict):
            if value.get("success") is True:
                return True, value.get("data")
            error = value.get("error")
            if value.get("success") is False and isinstance(error, dict):
                return False, error
        raise ValueError('not an amqp_worker reply ({"success": ..., "data" or "error": ...})')
