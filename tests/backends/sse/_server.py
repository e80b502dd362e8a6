"""A real SSE server for the tests: a small ASGI app served by hypercorn (trio worker) on an
ephemeral port, inside the test's nursery.

By default it serves its event *log* (``publish()`` appends; ids are "1", "2", ...) and
honours ``Last-Event-ID``: a client resuming after id ``k`` gets events ``k+1...``. Tests
script misbehaviour by queueing :class:`Reply` objects, each answering one request: a status,
a content type, raw body bytes, then what to do next (end the response, drop the connection,
hang, or go on with the log). ``drop_after`` makes every log response drop the connection
mid-event after that many events. Every request is recorded with its time and headers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Then = Literal["end", "abort", "hang", "log"]


class DropConnection(Exception):
    """Raised inside the ASGI app after the response started: hypercorn drops the
    connection without finishing the chunked body, as a crashed or restarted server would."""


@dataclass
class Reply:
    status: int = 200
    content_type: str = "text/event-stream"
    body: bytes = b""
    then: Then = "end"


@dataclass
class Seen:
    time: float
    headers: dict[str, str]


@dataclass
class SSEServer:
    url: str = ""
    log: list[str] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    #: Drop each log connection after this many events (half-way through the next one).
    drop_after: int | None = None
    #: ``retry:`` sent at the start of each log response.
    retry_ms: int | None = None
    open_streams: int = 0
    disconnects: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def publish(self, *data: str) -> None:
        self.log.extend(data)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_requests(self, count: int, within: float = 15.0) -> None:
        with trio.fail_after(within):
            while len(self.requests) < count:
                await self._changed.wait()

    async def wait_disconnects(self, count: int, within: float = 15.0) -> None:
        with trio.fail_after(within):
            while self.disconnects < count:
                await self._changed.wait()

    # ------------------------------------------------------------------- ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})  # startup / shutdown
                if kind == "lifespan.shutdown":
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Seen(trio.current_time(), headers))
        self._notify()
        reply = self.replies.popleft() if self.replies else Reply(then="log")
        self.open_streams += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope)
                await self._respond(reply, headers, send)
                nursery.cancel_scope.cancel()
        finally:
            self.open_streams -= 1
            self._notify()

    async def _watch_disconnect(self, receive: Any, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnects += 1
        self._notify()
        scope.cancel()

    async def _respond(self, reply: Reply, headers: dict[str, str], send: Any) -> None:
        response_headers = [(b"cache-control", b"no-cache")]
        if reply.content_type:
            response_headers.append((b"content-type", reply.content_type.encode()))
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": response_headers}
        )
        if reply.body:
            await send({"type": "http.response.body", "body": reply.body, "more_body": True})
        if reply.then == "end":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif reply.then == "abort":
            raise DropConnection
        elif reply.then == "hang":
            await trio.sleep_forever()
        else:
            await self._serve_log(headers.get("last-event-id", ""), send)

    async def _serve_log(self, last_id: str, send: Any) -> None:
        position = int(last_id) if last_id.isdigit() else 0
        if self.retry_ms is not None:
            await self._send(send, f"retry: {self.retry_ms}\n\n")
        sent = 0
        while True:
            while position < len(self.log):
                position += 1
                data = self.log[position - 1]
                if self.drop_after is not None and sent == self.drop_after:
                    # Half an event (its id included), then the connection drops: the
                    # client must not count it as seen.
                    await self._send(send, f"id: {position}\ndata: {data[:1]}")
                    raise DropConnection
                await self._send(send, f"id: {position}\ndata: {data}\n\n")
                sent += 1
            await self._changed.wait()

    @staticmethod
    async def _send(send: Any, text: str) -> None:
        await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


@asynccontextmanager
async def running_server() -> AsyncIterator[SSEServer]:
    """Serve a fresh :class:`SSEServer` on 127.0.0.1 (port 0) until the block ends."""
    server = SSEServer()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None  # DropConnection tracebacks are the point, not noise
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, server, config)  # type: ignore[arg-type]
        server.url = binds[0] + "/events"
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
