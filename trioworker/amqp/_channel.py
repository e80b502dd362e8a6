"""A channel over its connection: consuming, publishing, acknowledging, and the events the
connection's reader hands it.

A :class:`Channel` adds to its synchronous methods (:mod:`._channel_methods`) what makes
a channel useful at rate: consumers (:mod:`._consumer`), publishes and their confirms
(:mod:`._confirmation`), and acks. Acks, nacks and rejects are
plain (non-async) calls — they only queue a frame for the writer — so a consumer loop pays no
scheduling cost per acknowledgement.

The ``handle_*`` methods are the channel's side of its contract with the connection: the
reader calls them for each event of this channel, synchronously. None awaits or calls user
code, except a callback-mode consumer's ``on_delivery``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio
from pamqp import base, commands

from ._channel_methods import ChannelMethods
from ._confirmation import Confirmation, PublisherConfirms
from ._consumer import Consumer, OnDelivery, new_consumer_tag
from ._errors import AMQPConnectionError, ChannelClosedError, ConsumerCancelledError
from ._link import ConnectionLink
from .protocol import (
    AMQPConnection,
    AMQPError,
    BasicProperties,
    ChannelClosed,
    Delivery,
    LocalProtocolError,
    PublishConfirmed,
    Returned,
)

log = logging.getLogger("trioworker.amqp")


class Channel(ChannelMethods):
    """An AMQP channel. Open it with :meth:`Connection.open_channel` or
    ``async with connection.channel() as channel``.

    ``on_return`` is called with each :class:`~.protocol.Returned` message that has no
    confirmation to fail (mandatory publishes on a channel without confirms).
    """

    def __init__(self, connection: ConnectionLink, core: AMQPConnection, number: int) -> None:
        super().__init__(connection, core, number)
        self._opened = trio.Event()
        self._closed = trio.Event()
        self._consumers: dict[str, Consumer] = {}
        self._confirms = PublisherConfirms()
        self._unconfirmed = self._confirms.pending  # read and filled per publish
        self._flow = trio.Event()
        self._flow.set()
        self._wake_writer = connection.wake_writer
        self._wait_writable = connection.wait_writable
        self.on_return: Callable[[Returned], None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else "open"
        return f"<Channel {self.number} {state} on {self.connection.params.safe_url()}>"

    # ----------------------------------------------------------------- state

    @property
    def is_closed(self) -> bool:
        """True once the channel was closed, by either side, or its connection died."""
        return self._closed.is_set()

    @property
    def error(self) -> AMQPError | None:
        """Why the channel closed (``None`` while open)."""
        return self._error

    @property
    def unconfirmed(self) -> int:
        """Publishes waiting for the broker's confirm."""
        return len(self._unconfirmed)

    async def wait_open(self) -> None:
        """Wait until the broker confirmed the channel (``Channel.OpenOk``); raise if it
        refused it or the connection died first. :meth:`Connection.open_channel` does this."""
        await self._opened.wait()
        self._raise_if_closed()

    async def wait_closed(self) -> None:
        """Wait until the channel is closed; raise why if the broker closed it."""
        await self._closed.wait()
        error = self._error
        if isinstance(error, ChannelClosedError) and not error.by_peer:
            return
        if error is not None:
            raise error

    async def close(self, reply_code: int = 200, reply_text: str = "") -> None:
        """Close the channel (``Channel.Close`` → ``CloseOk``); a no-op if already closed.

        Waits for the broker's ``CloseOk`` (or the connection's end). Cancelling the wait
        leaves the close under way: the channel number is freed when the ``CloseOk`` lands.
        """
        if self._closed.is_set():
            await trio.lowlevel.checkpoint()
            return
        async with self._lock:
            if not self._closed.is_set():
                try:
                    self._core.close_channel(self.number, reply_code, reply_text)
                except LocalProtocolError:
                    self._fail(ChannelClosedError(reply_code, reply_text, by_peer=False))
                    return
                self._wake_writer()
                await self._closed.wait()

    # ------------------------------------------- events (the connection's reader)

    def handle_opened(self) -> None:
        """``Channel.OpenOk``: requests may go out."""
        self._opened.set()

    def handle_delivery(self, delivery: Delivery) -> None:
        """A delivery: to its consumer, or the answer to ``basic_get``.

        One for a consumer tag we do not know (a consumer cancelled while its deliveries
        were in flight, or a tag we never made) is rejected with requeue and logged, not
        held: held, it would stay unacked until the channel closes.
        """
        tag = delivery.consumer_tag
        if tag is None:  # Basic.GetOk answers the outstanding basic_get
            self._land_reply(delivery)
            return
        consumer = self._consumers.get(tag)
        if consumer is not None:
            try:
                consumer.deliver(delivery)
            except Exception:  # a callback's bug must not kill the connection's reader
                log.exception("on_delivery of consumer %r on channel %d raised", tag, self.number)
            return
        log.warning(
            "delivery %d on channel %d for unknown consumer %r: requeued",
            delivery.delivery_tag,
            self.number,
            tag,
        )
        self._core.basic_reject(self.number, delivery.delivery_tag, requeue=True)

    def handle_method(self, method: base.Frame) -> None:
        """A synchronous method's reply (the core checked it was expected)."""
        self._land_reply(method)
        if isinstance(method, commands.Basic.CancelOk):
            consumer = self._consumers.pop(method.consumer_tag or "", None)
            if consumer is not None:
                consumer.end(StopAsyncIteration(), drop_buffered=False)

    def handle_confirm(self, event: PublishConfirmed) -> None:
        """``Basic.Ack``/``Basic.Nack`` for our publishes."""
        self._confirms.confirmed(event)

    def handle_return(self, event: Returned) -> None:
        """``Basic.Return``: fails its publish's confirmation, else goes to ``on_return``."""
        if self._confirms.returned(event):
            return
        if self.on_return is not None:
            self.on_return(event)
        else:
            log.warning(
                "unroutable message returned on channel %d: %s %s (exchange=%r routing_key=%r)",
                self.number,
                event.reply_code,
                event.reply_text,
                event.exchange,
                event.routing_key,
            )

    def handle_consumer_cancelled(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer (``Basic.Cancel``: queue deleted, node down)."""
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            log.warning("broker cancelled consumer %r on queue %r", consumer_tag, consumer.queue)
            consumer.end(ConsumerCancelledError(consumer_tag), drop_buffered=False)

    def handle_flow(self, active: bool) -> None:
        """``Channel.Flow``: the broker pauses (or resumes) our publishes on this channel."""
        if active:
            self._flow.set()
        elif self._flow.is_set():
            self._flow = trio.Event()

    def handle_closed(self, event: ChannelClosed) -> None:
        """The channel closed: the broker's ``Close``, or the ``CloseOk`` to ours."""
        if event.by_peer:
            # Usually also raised to the caller whose request caused it: log quietly.
            log.info(
                "broker closed channel %d: %s %s", self.number, event.reply_code, event.reply_text
            )
        error = ChannelClosedError.for_code(
            event.reply_code, event.reply_text, event.class_id, event.method_id, event.by_peer
        )
        self._fail(error)

    def handle_connection_lost(self, error: AMQPConnectionError) -> None:
        """The connection ended: so does the channel, with the connection's error."""
        self._fail(error)

    def _fail(self, error: AMQPError) -> None:
        if self._closed.is_set():
            return
        self._error = error
        self._fail_reply(error)
        for consumer in self._consumers.values():
            consumer.end(error, drop_buffered=True)
        self._consumers.clear()
        self._confirms.fail(error)
        self._flow.set()
        self._opened.set()
        self._closed.set()

    # ------------------------------------------------------------- consuming

    async def basic_consume(
        self,
        queue: str,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str = "",
        arguments: Mapping[str, Any] | None = None,
        on_delivery: OnDelivery | None = None,
    ) -> Consumer:
        """Start consuming ``queue``; iterate the returned :class:`Consumer`, or pass
        ``on_delivery`` to have the connection's reader call it with each delivery instead
        (see :class:`Consumer` for what that callback may do).

        The consumer is registered before the request is sent: deliveries can arrive in
        the same read as ``ConsumeOk``, and none may be mistaken for an unknown consumer's.
        Cancelled while waiting for ``ConsumeOk``, the consumer is forgotten: deliveries
        that still come for it are rejected with requeue.
        """
        self._raise_if_closed()
        tag = consumer_tag or new_consumer_tag()
        if tag in self._consumers:
            raise LocalProtocolError(f"consumer tag {tag!r} is already in use on this channel")
        consumer = Consumer(self, queue, tag, no_ack, on_delivery=on_delivery)
        self._consumers[tag] = consumer
        try:
            await self._call(
                commands.Basic.Consume(
                    queue=queue,
                    consumer_tag=tag,
                    no_ack=no_ack,
                    exclusive=exclusive,
                    arguments=dict(arguments or {}),
                )
            )
        except BaseException:
            if self._consumers.get(tag) is consumer:
                del self._consumers[tag]
            raise
        return consumer

    async def basic_cancel(self, consumer_tag: str) -> None:
        """Stop a consumer. Deliveries already buffered stay available to its iterator,
        which then ends; they are still yours to ack or reject."""
        if self._closed.is_set():
            await trio.lowlevel.checkpoint()
            return
        await self._call(commands.Basic.Cancel(consumer_tag=consumer_tag))

    # ------------------------------------------------------------ publishing

    async def confirm_select(self) -> None:
        """Turn on publisher confirms: every publish from now on gets a verdict."""
        if not self._core.is_confirm_mode(self.number):
            await self._call(commands.Confirm.Select())

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = "",
        properties: BasicProperties | None = None,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> Confirmation:
        """Publish a message and return its :class:`Confirmation` without waiting for it.

        Waits only for flow control: while the broker blocks the connection
        (``Connection.Blocked``) or pauses the channel, or while more than a few MB are
        queued for the socket. In confirm mode, await the result's ``wait()`` or use
        :meth:`wait_for_confirms` to bound the number in flight.

        Always a cancellation point; cancelled, it has published nothing.
        """
        await self._wait_writable()
        if not self._flow.is_set():
            await self._flow.wait()
        self._raise_if_closed()
        if not isinstance(body, bytes):
            if isinstance(body, bytearray | memoryview):
                body = bytes(body)
            else:
                raise TypeError(f"body must be bytes, not {type(body).__name__}")
        tag = self._core.publish(
            self.number,
            exchange,
            routing_key,
            body,
            properties,
            mandatory=mandatory,
            immediate=immediate,
        )
        self._wake_writer()
        confirmation = Confirmation(tag)
        if tag:
            self._unconfirmed[tag] = confirmation
        return confirmation

    async def basic_publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = "",
        properties: BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish and, in confirm mode, wait for the broker's verdict (raise if negative)."""
        confirmation = await self.publish(
            body,
            routing_key=routing_key,
            exchange=exchange,
            properties=properties,
            mandatory=mandatory,
        )
        await confirmation.wait()

    async def wait_for_confirms(self, max_outstanding: int = 0) -> None:
        """Wait until at most ``max_outstanding`` publishes still wait for a confirm.

        This bounds a publish window; it does not raise for nacked messages (their
        :class:`Confirmation` does). Raises if the channel closes meanwhile. Always a
        cancellation point, but yields to the scheduler only when it has to wait (see
        :meth:`PublisherConfirms.wait_until_at_most` for why).
        """
        if len(self._unconfirmed) <= max_outstanding:  # the windowed loop's usual case
            self._raise_if_closed()
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        await self._confirms.wait_until_at_most(max_outstanding, self._raise_if_closed)

    # ------------------------------------------------------------- acknowledging

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (all up to it with ``multiple``). Queues the frame only.

        Raises the channel's error if it is closed: a delivery tag is only valid on the
        channel that received it, so a decision for a dead channel must be dropped.
        """
        self._raise_if_closed()
        self._core.basic_ack(self.number, delivery_tag, multiple)
        self._wake_writer()

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        """Reject one delivery, or all up to it with ``multiple``; requeue by default."""
        self._raise_if_closed()
        self._core.basic_nack(self.number, delivery_tag, multiple, requeue)
        self._wake_writer()

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        """Reject one delivery; with ``requeue=False`` it is dead-lettered or dropped."""
        self._raise_if_closed()
        self._core.basic_reject(self.number, delivery_tag, requeue)
        self._wake_writer()
