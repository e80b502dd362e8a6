"""An in-memory, bounded, bidirectional byte stream: the broker's stand-in for a socket.

:func:`stream_pair` returns the client's end and the broker's end. Bytes written to one
are read from the other in order, in chunks as large as the reader asks for. Each
direction holds at most about ``limit`` bytes: ``send_all`` returns once what it wrote
(and everything before it) fits under the limit, so a reader that stops reading stops
its writer — the backpressure a TCP socket's buffers give, which keeps both the broker
and the client bounded (trio's ``memory_stream_pair`` buffers without limit).

Closing one end makes the other's reads return ``b""`` once the data already written is
read, and its writes raise :class:`trio.BrokenResourceError`, as a socket would.
"""

from __future__ import annotations

from collections import deque

import trio

__all__ = ["PipeStream", "stream_pair"]

#: Bytes each direction holds before a writer waits (about a socket's buffers).
DEFAULT_LIMIT = 256 * 1024


class _OneWay:
    """One direction: a queue of chunks with a byte limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.writer_closed = False
        self.reader_closed = False
        self.readable = trio.lowlevel.ParkingLot()
        self.drained = trio.lowlevel.ParkingLot()

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        self.readable.unpark_all()

    def read(self, max_bytes: int) -> bytes:
        chunks = self.chunks
        first = chunks.popleft()
        if len(first) > max_bytes:
            chunks.appendleft(first[max_bytes:])
            data = first[:max_bytes]
        elif chunks and len(first) < max_bytes:
            parts = [first]
            room = max_bytes - len(first)
            while chunks and room > 0:
                chunk = chunks.popleft()
                if len(chunk) > room:
                    chunks.appendleft(chunk[room:])
                    chunk = chunk[:room]
                parts.append(chunk)
                room -= len(chunk)
            data = b"".join(parts)
        else:
            data = first
        self.size -= len(data)
        if self.size <= self.limit:
            self.drained.unpark_all()
        return data


class PipeStream(trio.abc.Stream):
    """One end of a :func:`stream_pair`."""

    def __init__(self, incoming: _OneWay, outgoing: _OneWay) -> None:
        self._in = incoming
        self._out = outgoing
        self._sending = False
        self._receiving = False

    @property
    def buffered(self) -> int:
        """Bytes written to this end's peer and not read yet, plus those waiting here."""
        return self._in.size + self._out.size

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        out = self._out
        if out.writer_closed:
            raise trio.ClosedResourceError("this end of the stream is closed")
        if out.reader_closed:
            raise trio.BrokenResourceError("the other end of the stream is closed")
        self._sending = True
        try:
            if data:
                out.write(bytes(data))
            if out.size > out.limit:
                while out.size > out.limit and not out.reader_closed:
                    await out.drained.park()
                if out.reader_closed:
                    raise trio.BrokenResourceError("the other end of the stream closed")
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        out = self._out
        while out.size > out.limit and not out.reader_closed and not out.writer_closed:
            await out.drained.park()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        incoming = self._in
        if incoming.reader_closed:
            raise trio.ClosedResourceError("this end of the stream is closed")
        self._receiving = True
        try:
            if not incoming.chunks:
                while not incoming.chunks and not incoming.writer_closed:
                    await incoming.readable.park()
                if incoming.reader_closed:
                    raise trio.ClosedResourceError("this end of the stream was closed")
                if not incoming.chunks:
                    return b""
            else:
                await trio.lowlevel.checkpoint()
            return incoming.read(max_bytes or 1 << 62)
        finally:
            self._receiving = False

    def close(self) -> None:
        """Close this end now (synchronous; :meth:`aclose` is the async form)."""
        self._out.writer_closed = True
        self._out.readable.unpark_all()
        self._in.reader_closed = True
        self._in.chunks.clear()
        self._in.size = 0
        self._in.drained.unpark_all()
        self._in.readable.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


def stream_pair(limit: int = DEFAULT_LIMIT) -> tuple[PipeStream, PipeStream]:
    """Two connected ends: ``(client, broker)``."""
    up = _OneWay(limit)  # client -> broker
    down = _OneWay(limit)  # broker -> client
    return PipeStream(down, up), PipeStream(up, down)
