"""``app.nameko.call``: call a method of a Nameko service, as Nameko's ``MethodProxy`` does.

One reply queue per app instance (``rpc.reply-{app.name}-{uuid}``), consumed on the
publishing connection and shared by every call; replies are matched by ``correlation_id``.
The request is published to ``nameko-rpc`` with routing key ``{service}.{method}``,
``reply_to`` the queue's uuid, mandatory and confirmed: a service nobody serves comes back
unroutable before the confirm, and the call fails at once with :class:`UnknownService`
instead of waiting for its timeout.

Pending calls are kept here, not per connection: after a reconnect the same queue is
consumed again, and a reply the broker held meanwhile still reaches its caller.
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from typing import TYPE_CHECKING, Any

import trio

from ...amqp import AMQPError, BasicProperties, Delivery, MessageReturnedError
from ...codecs import CodecError
from ..amqp._decoding import OFFLOAD_SIZE
from ..amqp._publisher import HelperStart
from ._link import ReplyConsumer, reply_queue, serve_replies
from ._wire import NAMEKO_JSON, RPC_EXCHANGE, UnknownService, remote_error, reply_queue_name

if TYPE_CHECKING:
    from ..amqp._backend import AMQPBackend

__all__ = ["Calls"]

log = logging.getLogger("trioworker.nameko")

#: ``app.amqp.connection_helper`` key of the reply consumer.
_REPLIES = "nameko.replies"


class _Pending:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Delivery | None = None


class Calls:
    """The calls of one app: its reply queue, and the calls waiting for a reply."""

    def __init__(self, amqp: AMQPBackend) -> None:
        self._amqp = amqp
        #: The ``reply_to`` of every request, and the reply queue's binding key.
        self.routing_key = str(uuid.uuid4())
        self._pending: dict[str, _Pending] = {}

    async def call(
        self,
        service_name: str,
        target: str,
        method: str,
        body: bytes,
        *,
        headers: dict[str, Any],
        timeout: float | None,  # noqa: ASYNC109 - the documented API
    ) -> Any:
        """Send a request to ``target.method`` and return its result (see the module
        docstring); ``service_name`` is ours (it names the reply queue)."""
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        correlation_id = str(uuid.uuid4())
        pending = _Pending()
        start = functools.partial(
            serve_replies,
            queue=reply_queue(reply_queue_name(service_name, self.routing_key), self.routing_key),
            on_reply=self._on_reply,
        )
        with trio.move_on_at(deadline):
            consumer = await self._consumer(start)
            self._pending[correlation_id] = pending
            try:
                try:
                    await self._amqp.publish(
                        body,
                        routing_key=f"{target}.{method}",
                        exchange=RPC_EXCHANGE.name,
                        properties=BasicProperties(
                            reply_to=self.routing_key,
                            correlation_id=correlation_id,
                            content_type=NAMEKO_JSON.content_type,
                            content_encoding=NAMEKO_JSON.content_encoding,
                            delivery_mode=2,
                            headers=headers,
                        ),
                        mandatory=True,
                    )
                except MessageReturnedError:
                    raise UnknownService(target) from None
                await self._wait(pending, consumer, start)
            finally:
                self._pending.pop(correlation_id, None)
        reply = pending.reply
        if reply is None:
            raise TimeoutError(
                f"no reply from Nameko service {target!r} ({method}) within {timeout} s"
            )
        return await _result(reply)

    async def _consumer(self, start: HelperStart) -> ReplyConsumer:
        consumer = await self._amqp.connection_helper(_REPLIES, start)
        assert isinstance(consumer, ReplyConsumer)
        return consumer

    async def _wait(self, pending: _Pending, consumer: ReplyConsumer, start: HelperStart) -> None:
        """Wait for the reply, consuming the queue again on the next connection if this
        one is lost meanwhile: the queue is durable, the reply waits in it."""
        while not pending.event.is_set():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_closed, consumer, nursery.cancel_scope)
                await pending.event.wait()
                nursery.cancel_scope.cancel()
            if not pending.event.is_set():
                consumer = await self._consumer(start)

    def _on_reply(self, delivery: Delivery) -> None:
        """Called by the connection's reader: hand the reply to its call (decoded there,
        in the caller's task, so a large reply never stalls the reader)."""
        try:
            correlation_id = delivery.properties.correlation_id
        except AMQPError as exc:
            log.warning("Nameko reply with undecodable properties dropped: %s", exc)
            return
        pending = self._pending.get(correlation_id or "")
        if pending is None:
            log.debug("Nameko reply for an unknown or expired call %r", correlation_id)
            return
        if pending.reply is None:
            pending.reply = delivery
            pending.event.set()


async def _cancel_when_closed(consumer: ReplyConsumer, scope: trio.CancelScope) -> None:
    await consumer.wait_closed()
    scope.cancel()


async def _result(reply: Delivery) -> Any:
    """The result of a reply ``{"result": ..., "error": ...}``, or its error raised."""
    try:
        if len(reply.body) > OFFLOAD_SIZE:
            body = await trio.to_thread.run_sync(NAMEKO_JSON.decode, reply.body)
        else:
            body = NAMEKO_JSON.decode(reply.body)
    except CodecError as exc:
        raise CodecError(f"Nameko reply is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CodecError(f"Nameko reply is not an object: {type(body).__name__}")
    error = body.get("error")
    if error:
        raise remote_error(error)
    return body.get("result")
