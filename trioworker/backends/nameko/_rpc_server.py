"""``@app.nameko.rpc``: methods Nameko callers reach as ``{app.name}.{method}``.

Like Nameko's ``RpcConsumer``, all methods of the service share one queue, ``rpc-{name}``,
bound to ``nameko-rpc`` with ``{name}.*``: one consume route whose handler picks the method
by routing key. Each request is answered — result or error — on ``nameko-rpc`` with
routing key ``reply_to`` and the request's ``correlation_id``, and acknowledged once the
reply is confirmed (Nameko acks after the reply, too).

What goes wrong is said the way Nameko says it, so a Nameko caller gets its own exception
classes: ``MethodNotFound`` (no such method), ``MalformedRequest`` (not ``{"args",
"kwargs"}`` JSON), ``IncorrectSignature`` (checked with ``inspect.signature(...).bind``
before the call, so a ``TypeError`` raised *inside* the method is not mistaken for one),
and the method's own exception as ``exc_type``/``exc_path``/``value``/``exc_args``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...amqp import AMQPError, BasicProperties, ConnectionClosedError
from ...codecs import CodecError
from ...pipeline._handlers import Handler, adapt
from ..amqp import Binding, Queue
from ..amqp._message import Message, use_decoding
from ._context import context_from_headers, use_context
from ._events import DECODING
from ._wire import (
    NAMEKO_JSON,
    RPC_EXCHANGE,
    BadRequest,
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    rpc_queue_name,
    serialize_error,
)

__all__ = ["Reply", "RpcMethods", "rpc_queue"]

log = logging.getLogger("trioworker.nameko")

#: ``async def reply(body, *, routing_key, properties)``: publish a reply, confirmed.
Reply = Callable[..., Awaitable[None]]


def rpc_queue(service: str) -> Queue:
    """``rpc-{service}``: durable, bound to ``nameko-rpc`` with ``{service}.*``."""
    return Queue(
        rpc_queue_name(service), durable=True, bindings=[Binding(RPC_EXCHANGE, f"{service}.*")]
    )


@dataclasses.dataclass(frozen=True)
class _Method:
    handler: Handler
    signature: inspect.Signature | None
    timeout: float | None

    def check(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(str(exc)) from None

    async def run(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call = adapt(functools.partial(self.handler, *args, **kwargs))
        if self.timeout is None:
            return await call()
        with trio.move_on_after(self.timeout):
            return await call()
        raise _Timeout(self.timeout)


class _Timeout(Exception):
    """A method ran past its ``timeout`` (told apart from a ``TimeoutError`` of its own)."""


class RpcMethods:
    """The service's RPC methods, and the route handler serving them."""

    def __init__(self, service: str, reply: Reply, parent_calls_tracked: Callable[[], int]) -> None:
        self.service = service
        self._reply = reply
        self._methods: dict[str, _Method] = {}
        self._tracked = parent_calls_tracked

    def __contains__(self, name: str) -> bool:
        return name in self._methods

    def add(self, name: str, handler: Handler, timeout: float | None) -> None:
        """Serve ``handler`` as method ``name``."""
        try:
            signature: inspect.Signature | None = inspect.signature(handler)
        except (TypeError, ValueError):
            signature = None  # a builtin: its own TypeError will tell
        self._methods[name] = _Method(handler, signature, timeout)

    def handlers(self) -> list[tuple[str, Handler]]:
        """``(name, handler)`` of each method: ``nameko rpc-<service>.<method>``."""
        route = f"nameko {rpc_queue_name(self.service)}"
        return [(f"{route}.{name}", m.handler) for name, m in self._methods.items()]

    async def handle(self, messages: list[Message]) -> None:
        """The route handler: serve each request of the bulk."""
        for message in messages:
            await self._serve(message)

    async def _serve(self, message: Message) -> None:
        message.accept()  # answered whatever happens: a request that failed would again
        try:
            props = message.properties
        except AMQPError as exc:
            log.warning("Nameko RPC request with undecodable properties dropped: %s", exc)
            return
        result: Any = None
        error: dict[str, Any] | None = None
        method_name = message.routing_key.rsplit(".", 1)[-1]
        try:
            result = await self._call(message, method_name)
        except BadRequest as exc:
            log.info("Nameko RPC request %s.%s refused: %r", self.service, method_name, exc)
            error = serialize_error(exc)
        except _Timeout as exc:
            log.error("Nameko RPC method %r timed out after %s s", method_name, exc.args[0])
            why = f"{method_name} did not finish within {exc.args[0]} s"
            error = serialize_error(TimeoutError(why))
        except Exception as exc:
            log.exception("Nameko RPC method %r raised", method_name)
            error = serialize_error(exc)
        if not props.reply_to:
            log.info("Nameko RPC request to %r has no reply_to: result dropped", method_name)
            return
        body = _encode_reply(result, error)
        try:
            await self._reply(
                body,
                routing_key=props.reply_to,
                properties=BasicProperties(
                    correlation_id=props.correlation_id,
                    content_type=NAMEKO_JSON.content_type,
                    content_encoding=NAMEKO_JSON.content_encoding,
                    delivery_mode=2,
                ),
            )
        except ConnectionClosedError as exc:
            # No publishing connection any more (the app is stopping): give the request
            # back, for another instance to answer, rather than drop it unanswered.
            message.reject(requeue=True)
            log.warning("Nameko RPC reply to %r not sent (%s): request requeued", method_name, exc)
        except (AMQPError, TimeoutError) as exc:
            log.error("Nameko RPC reply to %r not sent: %s", method_name, exc)

    async def _call(self, message: Message, method_name: str) -> Any:
        prefix = f"{self.service}."
        key = message.routing_key
        method = self._methods.get(key[len(prefix) :]) if key.startswith(prefix) else None
        if method is None:
            raise MethodNotFound(method_name)
        use_decoding(message, DECODING)
        try:
            body = await DECODING.decode_async(message)
        except (CodecError, AMQPError) as exc:
            raise MalformedRequest(f"request body does not decode: {exc}") from None
        if not isinstance(body, dict) or "args" not in body or "kwargs" not in body:
            raise MalformedRequest("Message missing `args` or `kwargs`")
        args, kwargs = body["args"], body["kwargs"]
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise MalformedRequest("`args` must be a list and `kwargs` an object")
        method.check(args, kwargs)
        context = context_from_headers(
            message.properties.headers, self.service, method_name, self._tracked()
        )
        with use_context(context):
            return await method.run(args, kwargs)


def _encode_reply(result: Any, error: dict[str, Any] | None) -> bytes:
    """``{"result", "error"}`` in JSON; a result JSON cannot hold becomes Nameko's
    ``UnserializableValueError`` (the reply must go, or the caller waits forever)."""
    try:
        return NAMEKO_JSON.encode({"result": result, "error": error})
    except CodecError:
        try:
            shown = repr(result)
        except Exception:
            shown = "[__repr__ failed]"
        log.error("Nameko RPC result cannot be sent as JSON: %s", shown[:200])
        unserializable = {
            "exc_type": "UnserializableValueError",
            "exc_path": "nameko.exceptions.UnserializableValueError",
            "exc_args": [],
            "value": f"Unserializable value: `{shown}`",
        }
        return NAMEKO_JSON.encode({"result": None, "error": unserializable})
