"""The exceptions :mod:`trioworker.amqp` raises, one class per thing a caller may handle.

Connection failures at connect time are told apart because each asks for a different fix:
a refused port (:class:`ConnectError`), a certificate that does not verify
(:class:`TLSVerificationError`), a server that is not RabbitMQ
(:class:`NotAMQPServerError`), wrong credentials (:class:`AuthenticationError`), a missing
vhost (:class:`VirtualHostError`), a silent peer (:class:`ConnectionTimeout`). Once open, a
connection ends with :class:`ConnectionClosedError` (the broker or we closed it, with the
reply code) or :class:`ConnectionLostError` (the transport died, heartbeats stopped, or the
peer broke the protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import AMQPError

if TYPE_CHECKING:
    from .protocol import Returned


class AMQPConnectionError(AMQPError):
    """The connection could not be opened or is gone."""


class ConnectError(AMQPConnectionError, OSError):
    """TCP or TLS could not be established (refused port, unknown host, bad certificate)."""


class TLSError(ConnectError):
    """The TLS handshake with the broker failed (see the subclasses for the usual causes).

    A configuration error, as a rule: retrying with the same ``ssl_context`` fails again.
    """

    def __init__(self, message: str, *, host: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TLSVerificationError(TLSError):
    """The broker's certificate did not verify: unknown CA, expired, or not valid for the
    host name connected to. ``host`` and ``reason`` (OpenSSL's words) say which."""


class TLSCertificateRequiredError(TLSError):
    """The broker refused the TLS connection because we presented no (or no acceptable)
    client certificate: mutual TLS needs ``ssl_context.load_cert_chain(...)``."""


class ConnectionTimeout(AMQPConnectionError, TimeoutError):
    """Connecting, TLS or the AMQP handshake took longer than ``connection_timeout``."""


class NotAMQPServerError(AMQPConnectionError):
    """The peer does not speak AMQP 0-9-1 (garbage, another protocol, or an early close)."""


class AuthenticationError(AMQPConnectionError):
    """The broker refused the user name or password (403 ACCESS_REFUSED)."""


class VirtualHostError(AMQPConnectionError):
    """The vhost does not exist or the user may not use it (530 NOT_ALLOWED)."""


class ConnectionClosedError(AMQPConnectionError):
    """The connection was closed, by the broker (``reply_code`` tells why) or by us."""

    def __init__(self, reply_code: int, reply_text: str, by_peer: bool = True) -> None:
        who = "broker" if by_peer else "client"
        super().__init__(f"connection closed by the {who}: {reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.by_peer = by_peer


class ConnectionLostError(AMQPConnectionError):
    """The transport failed: the socket closed or errored, heartbeats stopped, or the peer
    broke the protocol (see ``__cause__``)."""


class ChannelClosedError(AMQPError):
    """The channel was closed; by the broker, ``reply_code`` says why (404, 406, ...).

    The specific codes have subclasses, so ``except NotFoundError`` catches a missing queue.
    """

    def __init__(
        self,
        reply_code: int,
        reply_text: str,
        class_id: int = 0,
        method_id: int = 0,
        by_peer: bool = True,
    ) -> None:
        super().__init__(f"channel closed: {reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        self.by_peer = by_peer

    @staticmethod
    def for_code(
        reply_code: int,
        reply_text: str,
        class_id: int = 0,
        method_id: int = 0,
        by_peer: bool = True,
    ) -> ChannelClosedError:
        """Build the most specific subclass for ``reply_code``."""
        cls = _BY_CODE.get(reply_code, ChannelClosedError)
        return cls(reply_code, reply_text, class_id, method_id, by_peer)


class AccessRefusedError(ChannelClosedError):
    """403 ACCESS_REFUSED: the user may not do this (or an exclusive queue of another)."""


class NotFoundError(ChannelClosedError):
    """404 NOT_FOUND: the queue or exchange does not exist."""


class ResourceLockedError(ChannelClosedError):
    """405 RESOURCE_LOCKED: an exclusive queue or consumer is held by another connection."""


class PreconditionFailedError(ChannelClosedError):
    """406 PRECONDITION_FAILED: e.g. re-declaring a queue with other arguments."""


_BY_CODE: dict[int, type[ChannelClosedError]] = {
    403: AccessRefusedError,
    404: NotFoundError,
    405: ResourceLockedError,
    406: PreconditionFailedError,
}


class PublishError(AMQPError):
    """A publish was not accepted by the broker."""


class PublishNackedError(PublishError):
    """The broker nacked the publish (it could not take responsibility for it)."""


class MessageReturnedError(PublishError):
    """A mandatory publish could not be routed to any queue (``Basic.Return``)."""

    def __init__(self, returned: Returned) -> None:
        super().__init__(
            f"message returned: {returned.reply_code} {returned.reply_text} "
            f"(exchange={returned.exchange!r}, routing_key={returned.routing_key!r})"
        )
        self.returned = returned
        self.reply_code = returned.reply_code
        self.reply_text = returned.reply_text


class ConsumerCancelledError(AMQPError):
    """The broker cancelled the consumer (``Basic.Cancel``: queue deleted, node down)."""

    def __init__(self, consumer_tag: str) -> None:
        super().__init__(f"consumer {consumer_tag!r} was cancelled by the broker")
        self.consumer_tag = consumer_tag
