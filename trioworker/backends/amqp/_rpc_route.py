"""Handler wrappers for typed consume routes and RPC routes.

Both turn the user's handler into the ``list[Message]`` handler a route runs, so the
batcher, the acknowledgements, reconnects and shutdown are the same for every route.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ...amqp import AMQPError
from ...codecs import Codec, CodecError
from ...pipeline._handlers import Handler, adapt
from ._decoding import Decoding
from ._log_fields import message_fields
from ._message import Message, use_decoding
from ._rpc_reply import data_body, reply_message
from ._typed import BodyType, InvalidBody, body_type

if TYPE_CHECKING:
    from ._publisher import Publisher

log = logging.getLogger("trioworker.amqp")

RouteHandler = Callable[[list[Message]], Awaitable[Any]]


async def decode_message(message: Message, decoding: Decoding, typed: BodyType | None) -> Any:
    """Decode a message's body with the codec its properties name if the route accepts it
    (else the route's codec; off the event loop when large or compressed), and validate it
    into ``typed`` if given. Raises :class:`CodecError` / :class:`InvalidBody`."""
    value = await decoding.decode_async(message)
    return value if typed is None else typed.validate(value)


def typed_consume_handler(
    handler: Handler,
    codec: str | Codec,
    accept: tuple[str | Codec, ...] = (),
    *,
    call: Callable[..., Awaitable[Any]] | None = None,
) -> RouteHandler | None:
    """For ``async def handle(orders: list[Order])``: decode, validate, call with the models
    (and, if its second parameter is annotated ``list[Message]``, with their messages).

    A message that does not decode or validate is rejected without requeue, with a log
    line, and left out of the list; the others go on. Returns ``None`` when the handler
    takes plain messages and the route decodes JSON only; a plain handler of a route with
    another ``codec`` or ``accept`` gets messages whose :meth:`Message.json` uses them.
    ``call`` is how the handler is called (a route's ``pool=``; default: ``adapt``).
    """
    decoding = Decoding(codec, accept)
    typed = body_type(handler)
    if typed is None:
        if decoding.is_default:
            return None
        plain = call or adapt(handler)

        async def decoding_handler(messages: list[Message]) -> Any:
            for message in messages:
                use_decoding(message, decoding)
            return await plain(messages)

        # __wrapped__: the blocked-loop watchdog looks for the user's function on the stack.
        return functools.update_wrapper(decoding_handler, handler, assigned=(), updated=())
    if not typed.many:
        raise TypeError(
            "consume handlers receive a list: annotate the parameter as "
            f"list[{typed.type.__name__}]"
        )
    run = call or adapt(handler)
    with_messages = typed.with_messages

    async def typed_handler(messages: list[Message]) -> Any:
        values = []
        decoded = []
        for message in messages:
            use_decoding(message, decoding)
            try:
                values.append(await decode_message(message, decoding, typed))
            except (CodecError, InvalidBody, AMQPError) as exc:
                message.reject(requeue=False)
                log.warning(
                    "message %d from queue %r rejected (not requeued): %s",
                    message.delivery_tag,
                    message.queue,
                    exc,
                    extra=message_fields(message),
                )
            else:
                decoded.append(message)
        if values:
            return await (run(values, decoded) if with_messages else run(values))
        return None

    return functools.update_wrapper(typed_handler, handler, assigned=(), updated=())


def rpc_handler(
    handler: Handler,
    codec: str | Codec,
    timeout: float | None,
    *,
    publisher: Publisher,
    concurrency: int = 1,
    accept: tuple[str | Codec, ...] = (),
    call: Callable[..., Awaitable[Any]] | None = None,
) -> RouteHandler:
    """Serve requests: call the handler, reply to ``reply_to`` with the same
    ``correlation_id``, and acknowledge the request whatever happened.

    The route hands over bulks of whatever requests are waiting (flush interval 0), and
    this wrapper runs the requests of a bulk concurrently, at most ``concurrency`` handler
    calls at once across all bulks. Taking requests in bulks keeps the scheduling cost per
    request low (one pass of the batcher per bulk, not per request), and the acks of a bulk
    go out as one ``Basic.Ack(multiple=True)``. Each reply is published as soon as its own
    handler returns: a slow request delays its bulk's ack, never the other replies.

    The reply is published through ``publisher`` — the publishing connection, not the one
    the request came on (RabbitMQ blocks publishing connections during an alarm; the
    consumers must keep acknowledging) — and confirmed before the request's ack goes out:
    if the request's channel dies first, the request is redelivered and answered again,
    never lost (a reply ``reply_to`` is a queue name, valid from any connection). A
    handler exception (or a timeout) becomes an error envelope
    ``{"error": {"type", "message"}}`` marked with the ``x-trioworker-error`` header — no
    traceback crosses — and the request is still acknowledged: a request that failed once
    would fail again, so requeueing it would loop forever. ``call`` is how the handler is
    called (a route's ``pool=``; default: ``adapt``).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    decoding = Decoding(codec, accept)
    use = decoding.codec
    # An enveloped codec (amqp_worker) calls a plain handler with the request's value.
    typed = body_type(handler) or data_body(handler, use)
    with_message = typed is not None and typed.with_messages
    if typed is not None and typed.many:
        raise TypeError("an RPC handler takes one request, not a list")
    run = call or adapt(handler)
    slots = _Slots(concurrency)

    async def serve(messages: list[Message]) -> None:
        if len(messages) == 1:
            await _limited(messages[0])
            return
        async with trio.open_nursery() as nursery:
            for message in messages:
                nursery.start_soon(_limited, message)

    async def _limited(message: Message) -> None:
        await slots.acquire()
        try:
            await _serve_one(message)
        finally:
            slots.release()

    async def _serve_one(message: Message) -> None:
        message.accept()  # an RPC request is acknowledged whatever happens
        try:
            props = message.properties
        except AMQPError as exc:
            log.warning(
                "RPC request %d has undecodable properties, dropped: %s",
                message.delivery_tag,
                exc,
                extra=message_fields(message),
            )
            return
        use_decoding(message, decoding)
        result: Any = None
        failure: BaseException | None = None  # the reply is an error reply for it
        try:
            # The reply goes back in the codec the request came in, if the route takes it.
            reply_codec = decoding.decoder(message)
        except CodecError:
            reply_codec = use  # a typed route refuses it below; a plain handler decides
        try:
            argument = message if typed is None else await decode_message(message, decoding, typed)
        except (CodecError, InvalidBody) as exc:
            message.reject(requeue=False)
            log.warning(
                "RPC request %d from %r rejected (not requeued): %s",
                message.delivery_tag,
                message.queue,
                exc,
                extra=message_fields(message),
            )
            failure = exc
        else:
            try:
                args = (argument, message) if with_message else (argument,)
                if timeout is None:
                    result = await run(*args)
                else:
                    with trio.fail_after(timeout):
                        result = await run(*args)
            except trio.TooSlowError:
                failure = TimeoutError(f"handler did not finish within {timeout} s")
                log.error(
                    "RPC handler for %r timed out after %s s",
                    message.queue,
                    timeout,
                    extra=message_fields(message),
                )
            except Exception as exc:
                log.exception(
                    "RPC handler for %r raised", message.queue, extra=message_fields(message)
                )
                failure = exc
        if not props.reply_to:
            log.info(
                "RPC request %d on %r has no reply_to: result dropped",
                message.delivery_tag,
                message.queue,
                extra=message_fields(message),
            )
            return
        try:
            body, reply_props = reply_message(reply_codec, result, failure, props.correlation_id)
        except CodecError as exc:
            log.error(
                "RPC result for %r cannot be encoded: %s",
                message.queue,
                exc,
                extra=message_fields(message),
            )
            body, reply_props = reply_message(reply_codec, None, exc, props.correlation_id)
        try:
            await publisher.publish(
                body,
                routing_key=props.reply_to,
                exchange="",
                properties=reply_props,
                mandatory=False,
            )
        except AMQPError as exc:
            # A reply the protocol or the broker refuses (say, a reply_to over 255 bytes)
            # fails this request only, not the other requests of its bulk.
            log.error(
                "RPC reply for request %d on %r not sent: %s",
                message.delivery_tag,
                message.queue,
                exc,
                extra=message_fields(message),
            )

    return functools.update_wrapper(serve, handler, assigned=(), updated=())


class _Slots:
    """At most ``size`` handler calls at once, across the bulks running concurrently.

    Unlike ``trio.Semaphore.acquire``, taking a free slot does not yield: the requests of
    a bulk start in one scheduler pass, so their replies leave in one write.
    """

    __slots__ = ("_free", "_lot")

    def __init__(self, size: int) -> None:
        self._free = size
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self) -> None:
        while self._free <= 0:
            await self._lot.park()
        self._free -= 1

    def release(self) -> None:
        self._free += 1
        if self._lot:
            self._lot.unpark()
