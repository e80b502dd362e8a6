"""``client.websocket(path)``: a WebSocket client on the app's routes, in-process.

httpx's ASGI transport speaks HTTP only, so a test of a ``@app.http.websocket`` route used to
need a real socket (``TestClient(app, bind_http=True)``). This client plays the server's
part of ASGI instead: it hands the app a ``websocket`` scope and the ASGI messages a client
causes (``websocket.connect`` / ``receive`` / ``disconnect``), and reads what the app sends
(``accept``, ``send``, ``close``, or an HTTP answer to the handshake). It follows hypercorn
where the two could differ:

- at most :data:`QUEUED` messages wait for the handler, so a test that sends faster than
  the handler receives is slowed down as a real client would be (TCP flow control);
- a handshake the app refuses raises :class:`WebSocketRejected` with the HTTP status
  (404 for an unknown path, 403 when the handler closes before accepting);
- what the app sends after the connection closed is dropped;
- leaving the block closes the connection (1000) if neither side did, and waits for the
  handler to end.

One difference is deliberate: the handler's ``receive()`` reports the close code the test
sent, where hypercorn 0.18 reports 1006 for every client close.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote

import trio

from ..http import WebSocketDisconnect
from ..http._websocket import data_message

__all__ = ["QUEUED", "TestWebSocket", "WebSocketRejected", "open_websocket"]

ASGIApp = Callable[
    [
        Mapping[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[dict[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
#: Messages that may wait in each direction (hypercorn queues 10 for the handler).
QUEUED = 10


class WebSocketRejected(Exception):
    """The app answered the handshake with an HTTP response instead of accepting it."""

    def __init__(self, status_code: int, body: bytes = b"", headers: Sequence[Any] = ()) -> None:
        super().__init__(f"WebSocket handshake refused with HTTP {status_code}")
        self.status_code = status_code
        self.body = body
        self.headers = [
            (bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in headers
        ]

    def json(self) -> Any:
        """The response body, decoded as JSON."""
        return json.loads(self.body)


class TestWebSocket:
    """The test's end of one WebSocket connection to the app.

    ``send(str | bytes)`` and ``receive()`` as on the app's :class:`~trioworker.WebSocket`;
    ``receive()`` raises :class:`~trioworker.http.WebSocketDisconnect` once the app closed
    (its code and reason are also in :attr:`close_code` / :attr:`close_reason`).
    """

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, to_app: trio.MemorySendChannel[dict[str, Any]],
                 from_app: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:  # fmt: skip
        self._to_app = to_app
        self._from_app = from_app
        #: The subprotocol the app accepted with (``None``: none).
        self.subprotocol: str | None = None
        #: Set once either side closed: the code and reason of that close.
        self.close_code: int | None = None
        self.close_reason = ""
        self._closed_by_app = False

    @property
    def closed(self) -> bool:
        """True once either side closed."""
        return self.close_code is not None

    async def send(self, data: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message; waits while
        :data:`QUEUED` messages wait for the handler already."""
        message = data_message("websocket.receive", data)
        self._check_open()
        await self._to_app.send(message)

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as a JSON text message."""
        await self.send(json.dumps(value))

    async def receive(self) -> str | bytes:
        """The app's next message: ``str`` (text) or ``bytes`` (binary)."""
        if self._closed_by_app:
            raise WebSocketDisconnect(self.close_code or 1005, self.close_reason)
        message = await self._next()
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        if kind == "websocket.close":
            self._closed_by_app = True
            self._ended(int(message.get("code", 1000)), str(message.get("reason") or ""))
            raise WebSocketDisconnect(self.close_code or 1005, self.close_reason)
        raise RuntimeError(f"unexpected ASGI message {kind!r} from the app on an open WebSocket")

    async def receive_text(self) -> str:
        """The next message, which must be text."""
        data = await self.receive()
        if not isinstance(data, str):
            raise TypeError(f"expected a text message, got {len(data)} bytes of binary")
        return data

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary."""
        data = await self.receive()
        if not isinstance(data, bytes):
            raise TypeError(f"expected a binary message, got text {data[:50]!r}")
        return data

    async def receive_json(self) -> Any:
        """The next text message, decoded as JSON."""
        return json.loads(await self.receive_text())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: the handler's ``receive()`` raises
        ``WebSocketDisconnect(code)``. Closing a closed socket does nothing."""
        if self.closed:
            return
        self._ended(code, reason)
        await self._to_app.send({"type": "websocket.disconnect", "code": code, "reason": reason})

    # ------------------------------------------------------------- handshake

    async def handshake(self) -> None:
        """Connect, and wait for the app's answer (raise :class:`WebSocketRejected`)."""
        await self._to_app.send({"type": "websocket.connect"})
        message = await self._next(handshake=True)
        kind = message["type"]
        if kind == "websocket.accept":
            self.subprotocol = message.get("subprotocol")
            return
        if kind == "websocket.close":  # closed before accepting: the server answers 403
            raise WebSocketRejected(403)
        if kind == "websocket.http.response.start":
            status, headers, body = message["status"], message.get("headers", ()), b""
            while True:
                part = await self._next(handshake=True)
                body += bytes(part.get("body") or b"")
                if not part.get("more_body"):
                    raise WebSocketRejected(status, body, headers)
        raise RuntimeError(f"unexpected ASGI message {kind!r} from the app during the handshake")

    async def _next(self, *, handshake: bool = False) -> dict[str, Any]:
        try:
            return await self._from_app.receive()
        except trio.EndOfChannel:
            # The app returned without a word more: before accepting, hypercorn answers 500;
            # after, it closes with 1011 (internal error).
            if handshake:
                raise WebSocketRejected(500) from None
            self._closed_by_app = True
            self._ended(1011, "")
            raise WebSocketDisconnect(1011) from None

    async def finish(self) -> None:
        """Close our end if it is open, then drop what the app still sends until its ASGI
        call returns (its channel ends)."""
        if not self.closed:
            await self.close(1000)
        while True:
            try:
                await self._from_app.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return

    def _check_open(self) -> None:
        if self._closed_by_app:
            raise WebSocketDisconnect(self.close_code or 1005, self.close_reason)
        if self.closed:
            raise RuntimeError("this WebSocket is closed: nothing can be sent")

    def _ended(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason


def websocket_scope(path: str, headers: Mapping[str, str] | None,
                    subprotocols: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """The ASGI ``websocket`` scope of a handshake to ``path`` (with its query string)."""
    if not path.startswith("/"):
        raise ValueError(f"a WebSocket path starts with '/', got {path!r}")
    raw_path, _, query = quote(path, safe="/%?=&:@!$'()*+,;-._~").partition("?")
    raw = [("host", "testserver"), *(headers or {}).items()]
    if subprotocols:
        raw.append(("sec-websocket-protocol", ", ".join(subprotocols)))
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in raw],
        "subprotocols": list(subprotocols),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {"websocket.http.response": {}},
    }


@asynccontextmanager
async def open_websocket(
    asgi: ASGIApp, scope: dict[str, Any], *, end_timeout: float
) -> AsyncIterator[TestWebSocket]:
    """Run one connection of ``asgi`` for the block (see the module's docstring)."""
    to_app_send, to_app_receive = trio.open_memory_channel[dict[str, Any]](QUEUED)
    from_app_send, from_app_receive = trio.open_memory_channel[dict[str, Any]](QUEUED)
    socket = TestWebSocket(to_app_send, from_app_receive)

    async def receive() -> dict[str, Any]:
        try:
            return await to_app_receive.receive()
        except trio.EndOfChannel:  # the test's end is gone: as a vanished client
            return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: dict[str, Any]) -> None:
        if socket.closed:
            return  # as hypercorn: an app may finish after the close
        await from_app_send.send(message)

    async def run_app() -> None:
        async with from_app_send:
            await asgi(scope, receive, send)

    # Errors are raised after the nursery closed, so they reach the test unwrapped (as
    # open_app does): a refused handshake, the test's own assertion errors.
    error: BaseException | None = None
    stuck = False
    async with trio.open_nursery() as nursery, to_app_send, from_app_receive:
        nursery.start_soon(run_app)
        try:
            await socket.handshake()
            yield socket
        except BaseException as exc:
            error = exc
        # Shielded: the handler gets its time to end even if the test was cancelled.
        with trio.CancelScope(shield=True), trio.move_on_after(end_timeout) as waited:
            await socket.finish()
        if waited.cancelled_caught:
            nursery.cancel_scope.cancel()
            stuck = True
    if error is not None:
        raise error
    if stuck:
        raise RuntimeError(
            f"the WebSocket handler did not end within {end_timeout} s of the connection's "
            "close: cancelled"
        )
