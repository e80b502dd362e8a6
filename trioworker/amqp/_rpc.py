"""RPC over AMQP: the calling side, on RabbitMQ's direct reply-to.

Direct reply-to (``amq.rabbitmq.reply-to``) spares a reply queue per client: the client
consumes the pseudo-queue ``amq.rabbitmq.reply-to`` in no-ack mode on a channel, publishes
requests on *that same channel* with ``reply_to="amq.rabbitmq.reply-to"``, and the broker
routes each reply straight back to that consumer. Many concurrent calls share the channel;
replies are matched to calls by ``correlation_id``.

Requests are published ``mandatory``: a call to a queue that does not exist comes back as a
``Basic.Return`` at once, and the call fails with :class:`NoRouteError` instead of waiting for
its timeout.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..codecs import Codec, CodecError, codec_for, get_codec
from ._channel import Channel
from ._connect import connect
from ._connection import Connection
from ._errors import AMQPConnectionError, ChannelClosedError
from .protocol import AMQPError, BasicProperties, Delivery, Returned

log = logging.getLogger("trioworker.amqp")

REPLY_TO = "amq.rabbitmq.reply-to"
#: Header an RPC responder sets (to a true value) on a reply whose body is an error
#: envelope ``{"error": {"type": ..., "message": ...}}``; the caller raises RemoteError.
RPC_ERROR_HEADER = "x-trioworker-error"


class RemoteError(Exception):
    """The remote handler raised: ``type`` and ``message`` say what (no traceback crosses)."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class NoRouteError(AMQPError):
    """The request could not be routed: no queue of that name (``Basic.Return``)."""


class _Call:
    __slots__ = ("codec", "event", "outcome")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.event = trio.Event()
        self.outcome: tuple[bool, Any] | None = None  # (ok, value or exception)

    def resolve(self, ok: bool, value: Any) -> None:
        if self.outcome is None:
            self.outcome = (ok, value)
            self.event.set()


class RpcClient:
    """Calls RPC routes. Get one from :func:`rpc_client` (or ``app.amqp.call``)."""

    def __init__(self, channel: Channel, *, codec: str | Codec = "json") -> None:
        self.channel = channel
        self.codec = get_codec(codec)
        self._pending: dict[str, _Call] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}.{id(self):x}."
        channel.on_return = self._on_return

    @property
    def pending(self) -> int:
        """Calls waiting for their reply."""
        return len(self._pending)

    async def call(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the documented API
        codec: str | Codec | None = None,
        exchange: str = "",
    ) -> Any:
        """Send ``payload`` to the RPC route on ``queue``; return the decoded reply.

        Raises :class:`RemoteError` if the handler raised, :class:`NoRouteError` if no
        queue took the request, ``TimeoutError`` after ``timeout`` seconds (``None``: wait
        forever), and the channel's error if the connection is lost meanwhile.
        """
        use = self.codec if codec is None else get_codec(codec)
        body = use.encode(payload)
        correlation_id = f"{self._prefix}{next(self._ids)}"
        pending = _Call(use)
        self._pending[correlation_id] = pending
        try:
            await self.channel.publish(
                body,
                routing_key=queue,
                exchange=exchange,
                mandatory=True,
                properties=BasicProperties(
                    reply_to=REPLY_TO,
                    correlation_id=correlation_id,
                    content_type=use.content_type,
                    content_encoding=use.content_encoding,
                ),
            )
            if timeout is None:
                await pending.event.wait()
            else:
                with trio.move_on_after(timeout):
                    await pending.event.wait()
        finally:
            self._pending.pop(correlation_id, None)
        if pending.outcome is None:
            raise TimeoutError(f"no reply from {queue!r} within {timeout} s")
        ok, value = pending.outcome
        if not ok:
            raise value
        return value

    # --------------------------------------------------------------- replies

    def _on_reply(self, delivery: Delivery) -> None:
        try:
            props = delivery.properties
        except AMQPError as exc:
            log.warning("RPC reply with undecodable properties dropped: %s", exc)
            return
        pending = self._pending.get(props.correlation_id or "")
        if pending is None:
            log.debug("RPC reply for an unknown or expired call %r", props.correlation_id)
            return
        codec = codec_for(props.content_type, props.content_encoding, pending.codec)
        try:
            # A codec with an envelope (amqp_worker) says in the body whether it failed.
            ok, value = codec.decode_reply(delivery.body)
        except CodecError as exc:
            pending.resolve(False, exc)
            return
        if ok and (props.headers or {}).get(RPC_ERROR_HEADER):
            ok, value = False, value.get("error", {}) if isinstance(value, dict) else {}
        if ok:
            pending.resolve(True, value)
        else:
            error = value if isinstance(value, dict) else {}
            pending.resolve(
                False,
                RemoteError(str(error.get("type", "Error")), str(error.get("message", ""))),
            )

    def _on_return(self, returned: Returned) -> None:
        try:
            correlation_id = returned.properties.correlation_id or ""
        except AMQPError:
            return
        pending = self._pending.get(correlation_id)
        if pending is not None:
            pending.resolve(
                False,
                NoRouteError(
                    f"no queue {returned.routing_key!r} to take the request "
                    f"({returned.reply_code} {returned.reply_text})"
                ),
            )

    def _fail_all(self, error: BaseException) -> None:
        for pending in self._pending.values():
            pending.resolve(False, error)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Consume the replies until the channel ends; then fail the calls still waiting.

        Start it with ``await nursery.start(client.run)`` (as :func:`open_rpc_client` does):
        it reports started once the reply consumer is registered, so calls can be made.
        Cancelled, it stops watching for the consumer's end (replies are still matched
        until the channel closes, but a dead channel no longer fails the waiting calls).

        Replies are matched in the connection's reader, as they are parsed: the consumer is
        in callback mode and hands each delivery straight to :meth:`_on_reply` instead of
        buffering it for this task, which saves a task switch on every call (the caller is
        woken directly). This task only waits for the consumer's end.
        """
        consumer = await self.channel.basic_consume(
            REPLY_TO, no_ack=True, on_delivery=self._on_reply
        )
        task_status.started()
        try:
            await consumer.wait_ended()
        except (ChannelClosedError, AMQPConnectionError) as exc:
            self._fail_all(exc)
        else:
            self._fail_all(ChannelClosedError(200, "the reply consumer was cancelled"))


@asynccontextmanager
async def open_rpc_client(
    connection: Connection, *, codec: str | Codec = "json"
) -> AsyncIterator[RpcClient]:
    """An :class:`RpcClient` on its own channel of an open connection."""
    body_error: BaseException | None = None
    async with connection.channel() as channel, trio.open_nursery() as nursery:
        client = RpcClient(channel, codec=codec)
        await nursery.start(client.run)
        try:
            yield client
        except BaseException as exc:  # re-raised unwrapped below (see connect())
            body_error = exc
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


@asynccontextmanager
async def rpc_client(
    url: str | None = None, *, codec: str | Codec = "json", **options: Any
) -> AsyncIterator[RpcClient]:
    """A connection and an :class:`RpcClient` for the duration of a block, outside any app::

    async with trioworker.amqp.rpc_client("amqp://guest:guest@127.0.0.1/%2F") as client:
        total = await client.call("math.add", [1, 2])
    """
    async with connect(url, **options) as conn, open_rpc_client(conn, codec=codec) as client:
        yield client
