"""A channel's incoming publishes: content assembly, publisher confirms, direct reply-to.

``Basic.Publish``, then one content header frame, then body frames up to the announced
size (spec 4.2.6); any other frame on the channel in between is a 505. The header's size
is checked against the broker's maximum message size before any body arrives (406, the
channel closes and its frames are discarded), so no client makes the broker assemble a
body without bound; a malformed property list is a 502.

In confirm mode each publish is numbered; acks go out once per batch of received frames,
with ``multiple`` (what RabbitMQ does under load), and are flushed before a return or a
nack so that the client can match a ``Basic.Return`` to its publish. A publish whose
``reply_to`` is ``amq.rabbitmq.reply-to`` gets the routing key of the channel's reply
consumer instead (406 if it has none), as RabbitMQ's direct reply-to does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

from pamqp import base

from ...amqp import PropertyDecodeError
from ._content import FLAG_USER_ID, Content, check_property_list, copy_properties
from ._errors import (
    FRAME_ERROR,
    NO_ROUTE,
    NOT_IMPLEMENTED,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    ConnectionError,
    precondition_failed,
)
from ._frames import encode_confirm, encode_content, encode_method, encode_return
from ._queue import Queue
from ._vhost import REPLY_TO, VHost

__all__ = ["Output", "Publishes"]

_header_sizes = struct.Struct(">HHQ")
_FLAG_REPLY_TO = 0x0200
_REPLY_TO_FIELD = bytes((len(REPLY_TO),)) + REPLY_TO.encode()


class Output(Protocol):
    """The connection, as its channels see it."""

    frame_max: int
    username: str
    #: The client understands broker-initiated ``basic.cancel``.
    cancel_notify: bool

    @property
    def writable(self) -> bool:
        """Deliveries may be queued (the output is below its high-water mark)."""
        ...

    def send(self, data: bytes) -> None: ...

    def confirms_pending(self, channel: Publishes) -> None:
        """``channel`` has confirms to flush at the end of this batch of frames."""
        ...


class Publishes:
    """The publishing half of :class:`~._channel.ServerChannel`."""

    def __init__(
        self,
        number: int,
        output: Output,
        vhost: VHost,
        *,
        max_message_size: int,
        record: Callable[[Content], None],
    ) -> None:
        self.number = number
        self.output = output
        self.vhost = vhost
        self._max_message_size = max_message_size
        self._record = record
        self.confirm = False
        self._published = 0
        self._confirmed = 0
        self._to_confirm = 0
        #: The hidden queue of this channel's direct reply-to consumer.
        self._reply_queue: Queue | None = None
        # The message being received: (exchange, routing key, mandatory), then its size,
        # property list and the body parts so far.
        self._publish: tuple[str, str, bool] | None = None
        self._size = -1
        self._remaining = 0
        self._flags = 0
        self._properties = b""
        self._parts: list[bytes] = []

    def send(self, method: base.Frame) -> None:
        self.output.send(encode_method(self.number, method))

    @property
    def receiving_content(self) -> bool:
        """A publish's content frames are due: no other method may come in between."""
        return self._publish is not None

    # ------------------------------------------------------------- publishing

    def on_publish(self, exchange: str, routing_key: str, mandatory: bool, immediate: bool) -> None:
        if immediate:
            # RabbitMQ 3.x: a connection error.
            raise ConnectionError(NOT_IMPLEMENTED, "immediate=true")
        self._publish = (exchange, routing_key, mandatory)
        self._size = -1

    def on_header(self, data: bytes, start: int, end: int) -> None:
        if self._publish is None or self._size != -1:
            raise ConnectionError(
                UNEXPECTED_FRAME, "expected method frame, got non method frame instead"
            )
        if end - start < 14:
            raise ConnectionError(FRAME_ERROR, "content header frame too short")
        class_id, _, size = _header_sizes.unpack_from(data, start)
        if class_id != 60:
            raise ConnectionError(FRAME_ERROR, f"content header for class {class_id}, not 60")
        raw = data[start + 12 : end]
        self._flags = check_property_list(raw)
        if size > self._max_message_size:
            self._publish = None
            raise precondition_failed(
                f"message size {size} is larger than configured max size {self._max_message_size}"
            )
        self._properties = raw
        self._size = self._remaining = size
        self._parts = []
        if size == 0:
            self._complete(b"")

    def on_body(self, payload: bytes) -> None:
        if self._publish is None or self._size == -1:
            raise ConnectionError(
                UNEXPECTED_FRAME, "expected method frame, got non method frame instead"
            )
        remaining = self._remaining - len(payload)
        if remaining < 0:
            raise ConnectionError(FRAME_ERROR, "content body exceeds the announced size")
        self._remaining = remaining
        if remaining == 0 and not self._parts:
            self._complete(payload)
            return
        self._parts.append(payload)
        if remaining == 0:
            self._complete(b"".join(self._parts))

    def expect_method(self) -> None:
        """A method frame arrived: 505 if content frames were due instead."""
        if self._publish is not None:
            if self._size == -1:
                raise ConnectionError(
                    UNEXPECTED_FRAME,
                    "expected content header for class 60, got non content header frame instead",
                )
            raise ConnectionError(
                UNEXPECTED_FRAME, "expected content body, got non content body frame instead"
            )

    def _complete(self, body: bytes) -> None:
        publish = self._publish
        assert publish is not None
        self._publish = None
        self._parts = []
        exchange, routing_key, mandatory = publish
        flags = self._flags
        received = content = Content(exchange, routing_key, self._properties, body)
        if self.confirm:
            self._published += 1
        try:
            if flags & _FLAG_REPLY_TO and _REPLY_TO_FIELD in self._properties:
                content = self._direct_reply(content)
            if flags & FLAG_USER_ID and content.properties.user_id != self.output.username:
                raise precondition_failed(
                    f"user_id property set to '{content.properties.user_id}' but "
                    f"authenticated user was '{self.output.username}'"
                )
        except PropertyDecodeError as exc:
            raise ConnectionError(SYNTAX_ERROR, f"undecodable message properties: {exc}") from None
        routed, refused = self.vhost.publish(exchange, routing_key, content, flags)
        self._record(received)  # a publish the broker took (the refused ones raised)
        if not routed and mandatory:
            self.flush_confirms()
            self.output.send(
                encode_return(self.number, NO_ROUTE, "NO_ROUTE", exchange, routing_key)
                + encode_content(self.number, content, self.output.frame_max)
            )
        if self.confirm:
            if refused:
                self._to_confirm = self._published - 1
                self.flush_confirms()
                self.output.send(encode_confirm(self.number, self._published, False, False))
                self._confirmed = self._to_confirm = self._published
            else:
                self._to_confirm = self._published
                self.output.confirms_pending(self)

    def flush_confirms(self) -> None:
        """Send the acks of the publishes routed since the last flush (one frame)."""
        upto = self._to_confirm
        if upto > self._confirmed:
            multiple = upto - self._confirmed > 1
            self.output.send(encode_confirm(self.number, upto, multiple, True))
            self._confirmed = upto

    # --------------------------------------------------------- direct reply-to

    def _direct_reply(self, content: Content) -> Content:
        props = content.properties
        if props.reply_to != REPLY_TO:
            return content
        queue = self._reply_queue
        if queue is None:
            raise precondition_failed("fast reply consumer does not exist")
        props = copy_properties(props)
        props.reply_to = queue.name
        return content.replace(props)
