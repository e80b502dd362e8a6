"""An RPC route's reply, and how a route of an enveloped codec calls its handler.

Most routes reply in trioworker's own shape: the result as it is, an error as
``{"error": {"type", "message"}}`` marked by the ``x-trioworker-error`` header. A codec
with an :class:`~trioworker.codecs.Envelope` speaks its peer's protocol instead — for
``codec="amqp_worker"`` the reply is ``{"success": true, "data": ...}`` or
``{"success": false, "error": {...}}`` with the AMQP ``type`` property ``result`` /
``error`` and no trioworker header, byte for byte what an amqp_worker ``RPCWorker`` sends
(aio-pika's RPC pattern: the default exchange to ``reply_to``, the request's
``correlation_id``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from ...amqp import RPC_ERROR_HEADER, BasicProperties
from ...codecs import Codec
from ._message import Message
from ._typed import BodyType, wants_messages

__all__ = ["data_body", "reply_message"]


def reply_message(
    codec: Codec, result: Any, failure: BaseException | None, correlation_id: str | None
) -> tuple[bytes, BasicProperties]:
    """The body and properties replying ``result`` (or ``failure``, when set).

    Raises :class:`~trioworker.codecs.CodecError` when ``result`` cannot be encoded (the
    caller then replies with that error instead).
    """
    envelope = codec.envelope
    body = codec.encode_result(result) if failure is None else codec.encode_error(failure)
    headers: dict[str, Any] | None
    if envelope is None:
        headers = {RPC_ERROR_HEADER: True} if failure is not None else None
        kind = None
    else:
        headers = None  # the envelope says it: its peers know no trioworker header
        kind = envelope.result_type if failure is None else envelope.error_type
    return body, BasicProperties(
        correlation_id=correlation_id,
        content_type=codec.content_type,
        content_encoding=codec.content_encoding,
        headers=headers,
        message_type=kind,
    )


def _identity(value: Any) -> Any:
    return value


def data_body(handler: Callable[..., Any], codec: Codec) -> BodyType | None:
    """For an RPC route whose codec has an envelope: the handler takes the request's value.

    amqp_worker's handlers are ``async def handler(data)``: with ``codec="amqp_worker"``
    a handler whose first parameter is not annotated ``Message`` (nor with a model, which
    :func:`~._typed.body_type` handles) is called with ``X`` of ``{"data": X}`` — and
    with the message too if its second parameter is annotated ``Message``. Returns
    ``None`` (the handler gets the message, as on other routes) otherwise.
    """
    if codec.envelope is None:
        return None
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        params = []
    if params and _annotated_message(handler, params[0]):
        return None
    with_message = len(params) > 1 and wants_messages(handler, params, many=False)
    return BodyType(object, _identity, many=False, with_messages=with_message)


def _annotated_message(handler: Callable[..., Any], param: inspect.Parameter) -> bool:
    try:
        hint = typing.get_type_hints(handler).get(param.name, param.annotation)
    except Exception:  # an unresolvable annotation elsewhere in the signature
        hint = param.annotation
    if isinstance(hint, str):  # `from __future__ import annotations`, unresolved
        return hint.replace(" ", "").rsplit(".", 1)[-1] == "Message"
    return hint is Message
