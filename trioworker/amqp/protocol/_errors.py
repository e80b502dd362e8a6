"""Errors raised by the sans-IO AMQP core.

As in h11, the split is by *who* is at fault:

* :class:`RemoteProtocolError` — the peer sent something the protocol forbids (a malformed
  or oversized frame, a wrong end octet, a frame the state machine does not expect). The
  connection cannot be trusted any more: the core queues a ``Connection.Close`` carrying
  :attr:`~ProtocolError.reply_code` for the peer and enters a sticky error state.
* :class:`LocalProtocolError` — the caller asked for something the protocol does not allow
  in the current state (publish on a closed channel, a second synchronous request on one
  channel). Nothing was sent; the connection is still usable.

Both derive from :class:`ProtocolError`, itself an :class:`AMQPError`, the root of every
exception trioworker's AMQP client raises.
"""

from __future__ import annotations

# AMQP 0-9-1 reply codes used by the core (spec section 1.9 / RabbitMQ's errata).
FRAME_ERROR = 501
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_IMPLEMENTED = 540


class AMQPError(Exception):
    """Base class of every error raised by :mod:`trioworker.amqp`."""


class ProtocolError(AMQPError):
    """The AMQP conversation broke a protocol rule.

    ``reply_code`` is the AMQP reply code that describes the fault (501 frame error,
    505 unexpected frame, ...), suitable for a ``Connection.Close`` sent to the peer.
    """

    def __init__(self, message: str, reply_code: int = COMMAND_INVALID) -> None:
        super().__init__(message)
        self.reply_code = reply_code


class LocalProtocolError(ProtocolError):
    """The caller tried something the protocol forbids in the current state."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection is unusable from now on."""


class HeartbeatTimeout(RemoteProtocolError):
    """The peer sent nothing for two heartbeat intervals: it is presumed dead."""


class PropertyDecodeError(AMQPError, ValueError):
    """One message's properties could not be decoded.

    Raised lazily, when the properties of that message are first read: one bad property
    (a pre-1970 timestamp, a malformed header table) fails that message only, never the
    connection it arrived on.
    """
