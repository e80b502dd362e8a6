"""The errors a client's request can cause, with RabbitMQ's reply codes and texts.

AMQP has two kinds (spec 1.2, "Exceptions"): a *channel* exception closes the channel the
request came on (``Channel.Close``: 403, 404, 405, 406, ...), a *connection* exception
closes the whole connection (``Connection.Close``: 501-506, 530, 540, ...). The broker's
core raises one of the two classes below; the connection layer turns it into the close.

Reply texts are RabbitMQ's (``NOT_FOUND - no queue 'x' in vhost '/'``): clients and the
framework parse some of them (``_declare.describe_conflict`` reads the *inequivalent arg*
text), and people search for them.

What the memory broker does not implement is refused with 540 NOT_IMPLEMENTED on the
*channel* (:func:`not_implemented`), naming the feature: the route using it logs one clear
error and the rest of the connection keeps working.
"""

from __future__ import annotations

CONNECTION_FORCED = 320
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541
NO_ROUTE = 312

_NAMES = {
    CONNECTION_FORCED: "CONNECTION_FORCED",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}


class AMQPException(Exception):
    """A request the broker refuses: ``reply_code`` and RabbitMQ's ``reply_text``.

    ``method_index`` (class id << 16 | method id) names the method that failed, as the
    close frame reports it; the connection layer fills it in when the core does not know.
    """

    def __init__(self, reply_code: int, text: str, method_index: int = 0) -> None:
        self.reply_code = reply_code
        self.reply_text = f"{_NAMES.get(reply_code, 'ERROR')} - {text}"
        self.method_index = method_index
        super().__init__(self.reply_text)


class ChannelError(AMQPException):
    """Closes the channel the request came on."""


class ConnectionError(AMQPException):
    """Closes the connection."""


def resource(kind: str, name: str, vhost: str) -> str:
    """RabbitMQ's way of naming a queue or exchange in a reply text."""
    return f"{kind} '{name}' in vhost '{vhost}'"


def not_found(kind: str, name: str, vhost: str) -> ChannelError:
    return ChannelError(NOT_FOUND, f"no {resource(kind, name, vhost)}")


def precondition_failed(text: str) -> ChannelError:
    return ChannelError(PRECONDITION_FAILED, text)


def access_refused(text: str) -> ChannelError:
    return ChannelError(ACCESS_REFUSED, text)


def resource_locked(name: str, vhost: str) -> ChannelError:
    return ChannelError(
        RESOURCE_LOCKED,
        f"cannot obtain exclusive access to locked {resource('queue', name, vhost)}. It could "
        "be originally declared on another connection or the exclusive property value does "
        "not match that of the original declaration.",
    )


def not_implemented(feature: str) -> ChannelError:
    """A feature of RabbitMQ the memory broker does not have (540, on the channel)."""
    return ChannelError(NOT_IMPLEMENTED, f"memory broker does not implement {feature}")
