"""Feeding ``@app.sse.consume`` routes in a test: event streams served in-process.

The SSE backend reads its streams with httpx; ``app.sse.transport`` is the httpx transport
it reads through. :class:`SSEFeeds` is such a transport: every request the backend makes
is answered, without a socket, by the :class:`SSEFeed` of that URL — a ``200
text/event-stream`` response whose body is what the test sends, as it sends it. So the
route's whole pipeline runs for real (the parser, ``Last-Event-ID`` on reconnects, bulks,
``on_exception``); only the server is the test.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import trio

__all__ = ["SSEFeed", "SSEFeeds"]

#: Marks the end of the current response in a feed (the app then reconnects).
_END = b""


def _key(url: str) -> str:
    """What identifies a stream: scheme, host, port and path (a token in the query, as
    streams often carry one, does not make it another stream)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None))


def _field(name: str, value: str) -> bytes:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} cannot hold a line break: {value!r}")
    return f"{name}: {value}\n".encode()


class SSEFeed:
    """The event stream the app reads at one URL (``client.sse(url)``).

    Events sent before the app connects wait for it; a connection reads them in order.
    ``connections`` counts the requests the app made (1 after the first connect) and
    ``last_event_ids`` holds the ``Last-Event-ID`` header of each ("" for none).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        #: The status of the next responses: 200 serves the stream, 204 ends it for good
        #: (the SSE spec's "do not reconnect"), anything else is an error the app retries.
        self.status = 200
        self.connections = 0
        self.last_event_ids: list[str] = []
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)

    def __repr__(self) -> str:
        return f"<SSEFeed {self.url!r} pending={self.pending} connections={self.connections}>"

    @property
    def pending(self) -> int:
        """Chunks sent and not yet read by the app."""
        return self._send.statistics().current_buffer_used

    def send(
        self,
        data: str = "",
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        """Send one event (``data`` may hold several lines: one ``data:`` field each)."""
        chunk = b""
        if event is not None:
            chunk += _field("event", event)
        if id is not None:
            chunk += _field("id", id)
        if retry is not None:
            chunk += f"retry: {int(retry)}\n".encode()
        for line in data.split("\n"):
            chunk += f"data: {line}\n".encode()
        self.send_raw(chunk + b"\n")

    def send_raw(self, chunk: bytes) -> None:
        """Send bytes as they are: comments, partial lines, a malformed stream."""
        if not chunk:
            return  # empty means "end of response" on the wire of this feed
        self._send.send_nowait(bytes(chunk))

    def end(self) -> None:
        """End the current response once what was sent before is read: the app sees the
        server close the stream and reconnects (after the ``retry`` it was given)."""
        self._send.send_nowait(_END)

    async def response_body(self) -> AsyncIterator[bytes]:
        """The body of one response: the chunks sent, until :meth:`end`."""
        while True:
            chunk = await self._receive.receive()
            if chunk == _END:
                return
            yield chunk


class _FeedStream(httpx.AsyncByteStream):
    def __init__(self, feed: SSEFeed) -> None:
        self._feed = feed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._feed.response_body():
            yield chunk


class SSEFeeds(httpx.AsyncBaseTransport):
    """The httpx transport the TestClient gives ``app.sse``: one :class:`SSEFeed` per URL,
    made on first use (by the test or by the app's first request)."""

    def __init__(self) -> None:
        self._feeds: dict[str, SSEFeed] = {}

    def feed(self, url: str) -> SSEFeed:
        """The feed served at ``url`` (query and fragment ignored)."""
        key = _key(url)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = SSEFeed(key)
        return feed

    @property
    def feeds(self) -> list[SSEFeed]:
        """Every feed so far."""
        return list(self._feeds.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        feed = self.feed(str(request.url))
        feed.connections += 1
        feed.last_event_ids.append(request.headers.get("last-event-id", ""))
        if feed.status != 200:
            return httpx.Response(feed.status, request=request)
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
            stream=_FeedStream(feed),
            request=request,
        )
