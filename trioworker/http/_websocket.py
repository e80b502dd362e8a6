"""The WebSocket a ``@app.http.websocket`` handler gets: receive, send, close, iterate.

It speaks ASGI's WebSocket messages (``websocket.connect`` / ``receive`` / ``disconnect``
in, ``websocket.accept`` / ``send`` / ``close`` out), so the server under it (hypercorn,
with wsproto) does the framing, the masking, the close handshake and the answers to pings
(RFC 6455 §5.5.2: a Pong for every Ping, which the application never sees).

Reading is pull-based: a message is taken from the server only when the handler calls
:meth:`WebSocket.receive`. The server queues a few complete messages for the socket and
stops reading the connection when that queue is full, so a handler slower than its client
slows the client down (TCP flow control) instead of filling memory.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ._request import Headers, QueryParams

__all__ = ["WebSocket", "WebSocketDisconnect", "WebSocketState"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Close codes an endpoint may send (RFC 6455 §7.4.1, the IANA registry's 1012-1014, and
#: the 3000-4999 ranges for libraries and applications). 1005, 1006 and 1015 describe a
#: close that carried no code, or none at all: they are never put on the wire.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
#: A close frame's payload is at most 125 bytes, 2 of them the code.
_MAX_REASON = 123


def data_message(kind: str, data: str | bytes) -> dict[str, Any]:
    """The ASGI message ``kind`` (``websocket.send`` from the app, ``websocket.receive``
    to it) carrying ``data``: a text frame for ``str``, a binary one for bytes."""
    if isinstance(data, str):
        return {"type": kind, "text": data}
    if isinstance(data, bytes | bytearray | memoryview):
        return {"type": kind, "bytes": bytes(data)}
    raise TypeError(f"send() takes str or bytes, got {type(data).__name__}")


class WebSocketDisconnect(Exception):
    """The connection is over (or, for the handler, as good as over): ``code`` says why.

    Raised by :meth:`WebSocket.receive` when the client closed or went away, when a
    message was too large (1009), and when the server is shutting down (1001: the
    handler may still :meth:`~WebSocket.send` a last message until it returns).
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


class WebSocketState(enum.Enum):
    """Where the socket is: handshake pending, open, or closed (by either side)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


def _check_close(code: int, reason: str) -> None:
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"a close code is an int, got {code!r}")
    if code not in _SENDABLE and not 3000 <= code <= 4999:
        raise ValueError(
            f"{code} is not a close code an endpoint may send (1000-1003, 1007-1014, "
            "3000-4999; RFC 6455 §7.4)"
        )
    if len(reason.encode("utf-8")) > _MAX_REASON:
        raise ValueError(f"a close reason is at most {_MAX_REASON} bytes of UTF-8")


class WebSocket:
    """One WebSocket connection, for its handler.

    Attributes, as on :class:`Request`: ``path``, ``query``, ``headers``, ``path_params``
    (converted by the route template), ``route`` (the template), ``client``, ``app``,
    ``scope``. ``subprotocols`` lists what the client offered (``Sec-WebSocket-Protocol``).

    ``receive()`` returns ``str`` for a text message and ``bytes`` for a binary one;
    ``send()`` picks the frame type the same way. The socket is accepted by the first
    ``receive()`` or ``send()`` (or an explicit :meth:`accept`); closing it before that
    refuses the handshake (HTTP 403). ``max_message_size`` bounds a received message in
    bytes (text as UTF-8): a larger one closes the socket with 1009.
    """

    def __init__(
        self,
        scope: Mapping[str, Any],
        receive: Receive,
        send: Send,
        *,
        app: Any = None,
        path_params: dict[str, Any] | None = None,
        route: str | None = None,
        max_message_size: int | None = None,
    ) -> None:
        self.scope = scope
        self.app = app
        self.path: str = scope["path"]
        self.query = QueryParams.from_bytes(scope.get("query_string", b""))
        self.headers = Headers.from_raw(scope.get("headers", ()))
        self.path_params: dict[str, Any] = path_params or {}
        self.route = route
        self.subprotocols: list[str] = list(scope.get("subprotocols", ()))
        client = scope.get("client")
        self.client: tuple[str, int] | None = (client[0], client[1]) if client else None
        self.max_message_size = max_message_size
        self.state = WebSocketState.CONNECTING
        #: Why the socket ended — the client's disconnect or our close — once it has.
        self.close_code: int | None = None
        self.close_reason = ""
        self._receive = receive
        self._send = send
        self._receiving: trio.CancelScope | None = None
        self._stopped: tuple[int, str] | None = None  # (code, reason) of stop_receiving()
        self._closed_by_us = False

    def __repr__(self) -> str:
        return f"<WebSocket {self.path} {self.state.value}>"

    # ------------------------------------------------------------- handshake

    async def accept(self, subprotocol: str | None = None) -> None:
        """Complete the handshake (done for you by the first receive or send).

        ``subprotocol``: one of :attr:`subprotocols` to answer with.
        """
        if self.state is not WebSocketState.CONNECTING:
            return
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
        message: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            message["subprotocol"] = subprotocol
        self.state = WebSocketState.CONNECTED
        await self._send(message)

    # --------------------------------------------------------------- reading

    async def receive(self) -> str | bytes:
        """The next message: ``str`` (text frame) or ``bytes`` (binary frame).

        Waits until the client sends one. Raises :class:`WebSocketDisconnect` once the
        connection is over (the code the server reports for the client's close — 1006
        under hypercorn 0.18, whatever the client sent — 1009 for a message over
        ``max_message_size``, 1001 when the server shuts down). One task at a time may
        receive. Cancel-safe: a cancelled receive takes no message.
        """
        if self._stopped is not None:
            raise WebSocketDisconnect(*self._stopped)
        if self.state is WebSocketState.CLOSED:
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason)
        if self._receiving is not None:
            raise RuntimeError("another task is already receiving on this WebSocket")
        await self.accept()
        with trio.CancelScope() as scope:
            self._receiving = scope
            try:
                message = await self._receive()
            finally:
                self._receiving = None
        if scope.cancelled_caught:  # only stop_receiving() cancels it
            raise WebSocketDisconnect(*(self._stopped or (1001, "")))
        kind = message["type"]
        if kind == "websocket.disconnect":
            self._ended(int(message.get("code", 1005)), str(message.get("reason") or ""))
            raise WebSocketDisconnect(self.close_code or 1005, self.close_reason)
        if kind != "websocket.receive":
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket")
        data: str | bytes
        text = message.get("text")
        data = text if text is not None else bytes(message.get("bytes") or b"")
        if self.max_message_size is not None and self._size(data) > self.max_message_size:
            reason = f"message larger than {self.max_message_size} bytes"
            await self.close(1009, reason)
            raise WebSocketDisconnect(1009, reason)
        return data

    def _size(self, data: str | bytes) -> int:
        limit = self.max_message_size or 0
        if isinstance(data, bytes) or len(data) * 4 <= limit:  # UTF-8: at most 4 per char
            return len(data)
        return len(data.encode("utf-8"))

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        """``async for data in socket``: the messages until the connection is over (the
        loop ends; :attr:`close_code` says why)."""
        try:
            return await self.receive()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None

    def stop_receiving(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """From now on :meth:`receive` raises ``WebSocketDisconnect(code)`` (a waiting
        one at once); :meth:`send` and :meth:`close` still work.

        The server calls it when it shuts down, so a handler looping on ``receive()`` ends
        and can say goodbye within its grace period instead of waiting for a client that
        may never send again.
        """
        self._stopped = (code, reason)
        if self._receiving is not None:
            self._receiving.cancel()

    # --------------------------------------------------------------- writing

    async def send(self, data: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Waits while the connection's send buffer is full (a client reading slowly slows
        the handler down). Raises :class:`WebSocketDisconnect` if the client is known to
        be gone, ``RuntimeError`` after :meth:`close`.
        """
        message = data_message("websocket.send", data)
        if self.state is WebSocketState.CLOSED:
            if self._closed_by_us:
                raise RuntimeError("this WebSocket is closed: nothing can be sent")
            raise WebSocketDisconnect(self.close_code or 1005, self.close_reason)
        await self.accept()
        await self._send(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason`` (at most 123 bytes).

        Before the handshake completed, refuses it (the client gets HTTP 403). Closing a
        closed socket does nothing.
        """
        _check_close(code, reason)
        if self.state is WebSocketState.CLOSED:
            return
        self._closed_by_us = True
        self._ended(code, reason)
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def _ended(self, code: int, reason: str) -> None:
        self.state = WebSocketState.CLOSED
        self.close_code = code
        self.close_reason = reason

    @property
    def closed(self) -> bool:
        """True once either side closed (or the client went away)."""
        return self.state is WebSocketState.CLOSED
