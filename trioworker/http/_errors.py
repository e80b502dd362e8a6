"""Exceptions that become HTTP error responses instead of 500s."""

from __future__ import annotations

__all__ = ["BadRequest", "HTTPError", "PayloadTooLarge", "RequestTimeout"]


class HTTPError(Exception):
    """Raise from a handler to answer ``status`` with ``{"error": message}``.

    The message is shown to the client, so it must not carry internals; anything else a
    handler raises becomes a 500 whose details go to the log only.
    """

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HTTPError status must be 4xx or 5xx, got {status}")
        super().__init__(message)
        self.status = status
        self.message = message


class BadRequest(HTTPError, ValueError):
    """The request body could not be read as asked (malformed JSON, invalid UTF-8): 400.

    Also a ``ValueError``, so a handler that wants to answer differently can catch it like
    the ``json.JSONDecodeError`` it wraps.
    """

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class PayloadTooLarge(HTTPError):
    """The body is larger than ``app.http.max_body_size``: 413, read no further."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


class RequestTimeout(HTTPError):
    """The body did not arrive within ``app.http.body_timeout`` seconds: 408.

    A client that trickles its body (a byte a second) would otherwise hold its connection
    for as long as it likes; past the deadline the request is answered and the connection
    closed.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within {seconds:g} s")
        self.seconds = seconds
