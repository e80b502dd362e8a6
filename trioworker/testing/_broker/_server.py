"""The trio side of one broker connection: a reader, a writer and a heartbeat task.

* The **reader** feeds what the client sent to the :class:`~._connection.ServerConnection`
  and, while more than the high-water mark waits for the client to read, stops reading:
  a client that does not read its socket stops being read, as a TCP peer would, and the
  broker's memory for it stays bounded.
* The **writer** sends everything queued since its last write in one ``send_all``. After
  a write it lets the queues push deliveries they held back while the output was full.
* The **heartbeat** task ends a handshake that takes too long, sends heartbeats on an
  idle connection, closes one whose client has been silent for two intervals (RabbitMQ's
  rule), and hangs up a close handshake the client does not finish.

Nothing here raises into the broker's nursery: whatever ends the connection (the client's
close or hang-up, a protocol error, a bug in the broker met by odd input) ends only this
connection's tasks.
"""

from __future__ import annotations

import logging

import trio

from ._connection import HIGH_WATER, ConnectionState, ServerConnection
from ._errors import INTERNAL_ERROR, AMQPException
from ._frames import HEARTBEAT
from ._pipe import PipeStream

__all__ = ["ConnectionDriver"]

log = logging.getLogger("trioworker.testing")

#: Read size: a burst of publishes is parsed in one go.
RECEIVE_SIZE = 256 * 1024
#: RabbitMQ's ``handshake_timeout``.
HANDSHAKE_TIMEOUT = 10.0
#: How long the client has to answer our ``Connection.Close`` before we hang up.
CLOSE_TIMEOUT = 1.0


class ConnectionDriver:
    """Runs one :class:`ServerConnection` over the broker's end of a pipe."""

    def __init__(self, connection: ServerConnection, stream: PipeStream) -> None:
        self.connection = connection
        self.stream = stream
        self._wake = trio.lowlevel.ParkingLot()
        self._parked = False
        self._drained = trio.lowlevel.ParkingLot()
        self._opened = trio.Event()
        self._closing = trio.Event()
        self._finished = trio.Event()
        self._last_received = self._last_sent = trio.current_time()
        self._done = trio.Event()
        connection.on_output = self._on_output

    @property
    def idle(self) -> bool:
        """Nothing waits to be read or written on this connection."""
        return not self.connection.pending_output and not self.stream.buffered

    def _on_output(self) -> None:
        if self._parked:
            self._parked = False
            self._wake.unpark_all()

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for the client's doing."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader, nursery.cancel_scope)
                nursery.start_soon(self._writer, nursery.cancel_scope)
                nursery.start_soon(self._heartbeat, nursery.cancel_scope)
        finally:
            self.connection.lost()
            self.stream.close()
            self._done.set()

    async def wait_done(self) -> None:
        await self._done.wait()

    def close_forced(self, reason: str) -> None:
        """Start the broker's close of this connection (320 CONNECTION_FORCED)."""
        self.connection.close_forced(reason)
        self._state_changed()

    def _state_changed(self) -> None:
        state = self.connection.state
        if state is ConnectionState.OPENED:
            self._opened.set()
        elif state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            self._opened.set()
            self._closing.set()
            if state is ConnectionState.CLOSED:
                self._finished.set()
        self._on_output()

    def _apply(self, data: bytes) -> None:
        conn = self.connection
        try:
            conn.receive_data(data)
        except Exception:  # a broker bug met by odd input: this connection only
            log.exception("memory broker: internal error on a connection; closing it")
            try:
                conn.fail(AMQPException(INTERNAL_ERROR, "internal error in the memory broker"))
            except Exception:
                conn.lost()
        self._state_changed()

    async def _reader(self, scope: trio.CancelScope) -> None:
        conn = self.connection
        try:
            while not conn.finished:
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                self._last_received = trio.current_time()
                self._apply(data)
                while conn.pending_output >= HIGH_WATER and not conn.finished:
                    self._on_output()
                    await self._drained.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if not conn.finished:
            conn.lost()  # the client hung up without closing
            scope.cancel()
        self._on_output()  # the writer flushes what is left and hangs up

    async def _writer(self, scope: trio.CancelScope) -> None:
        conn = self.connection
        try:
            while True:
                data = conn.data_to_send()
                if data:
                    await self.stream.send_all(data)
                    self._last_sent = trio.current_time()
                    self._drained.unpark_all()
                    conn.resume_deliveries()
                    continue
                if conn.finished:
                    break
                self._parked = True
                await self._wake.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _heartbeat(self, scope: trio.CancelScope) -> None:
        conn = self.connection
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            await self._opened.wait()
        if not self._opened.is_set():
            log.warning("memory broker: handshake timed out; closing the connection")
            conn.lost()
            scope.cancel()
            return
        if conn.heartbeat and not self._closing.is_set():
            await self._beat(conn.heartbeat, scope)
        await self._closing.wait()
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._finished.wait()
        if not self._finished.is_set():
            # The client did not finish the close handshake (or does not read): hang up.
            conn.lost()
            scope.cancel()

    async def _beat(self, interval: int, scope: trio.CancelScope) -> None:
        """Until the connection starts closing: heartbeats out, silence watched."""
        conn = self.connection
        half = interval / 2
        while not self._closing.is_set():
            with trio.move_on_after(half):
                await self._closing.wait()
            now = trio.current_time()
            if now - self._last_received > 2 * interval:
                log.warning("memory broker: missed heartbeats from client, timeout: %ss", interval)
                conn.lost()
                scope.cancel()
                return
            if now - self._last_sent >= half and not conn.pending_output:
                conn.send(HEARTBEAT)
