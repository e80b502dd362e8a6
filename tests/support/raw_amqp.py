"""A deliberately tiny AMQP 0-9-1 client built on pamqp, for testing the test helpers.

It exists so the support code (rabbitmqctl helpers, proxies) can be proven against the real
broker without depending on trioworker's own client, which is the thing under test. It is
sequential and naive (no heartbeats, one channel, no error recovery): don't grow it into a
second client.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from pamqp import body, commands, frame, header, heartbeat
from pamqp.base import Frame

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
CONNECT_TIMEOUT = 10.0

AnyFrame = (
    Frame | body.ContentBody | header.ContentHeader | header.ProtocolHeader | heartbeat.Heartbeat
)
F = TypeVar("F", bound=Frame)


class RawAMQPError(Exception):
    """The broker answered something this naive client did not expect (e.g. Channel.Close)."""


class RawAMQPConnection:
    """An open connection with channel 1 open; use :func:`open_raw_amqp` to get one."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._confirming = False

    async def send(self, channel: int, value: AnyFrame) -> None:
        await self.stream.send_all(frame.marshal(value, channel))

    async def receive_frame(self) -> tuple[int, AnyFrame]:
        """Read exactly one frame (skipping heartbeats)."""
        while True:
            while len(self._buffer) < 7 or len(self._buffer) < 8 + self._frame_size():
                data = await self.stream.receive_some(65536)
                if not data:
                    raise RawAMQPError("connection closed by peer")
                self._buffer += data
            size = 8 + self._frame_size()
            raw = bytes(self._buffer[:size])
            del self._buffer[:size]
            _, channel, value = frame.unmarshal(raw)
            if not isinstance(value, heartbeat.Heartbeat):
                return channel, value

    def _frame_size(self) -> int:
        size: int = struct.unpack_from(">I", self._buffer, 3)[0]
        return size

    async def expect(self, kind: type[F]) -> F:
        _, value = await self.receive_frame()
        if not isinstance(value, kind):
            raise RawAMQPError(f"expected {kind.__name__}, got {value!r}")
        return value

    async def declare_queue(self, name: str, **kwargs: Any) -> commands.Queue.DeclareOk:
        """Queue.Declare on channel 1; kwargs go to ``pamqp.commands.Queue.Declare``."""
        await self.send(1, commands.Queue.Declare(queue=name, **kwargs))
        return await self.expect(commands.Queue.DeclareOk)

    async def publish(self, routing_key: str, payload: bytes, exchange: str = "") -> None:
        """Basic.Publish with a publisher confirm: on return the broker has the message.

        (A passive declare right after an unconfirmed publish may not count it yet: deliveries
        reach the queue through other broker processes.)
        """
        if not self._confirming:
            await self.send(1, commands.Confirm.Select())
            await self.expect(commands.Confirm.SelectOk)
            self._confirming = True
        await self.send(1, commands.Basic.Publish(exchange=exchange, routing_key=routing_key))
        await self.send(1, header.ContentHeader(0, len(payload), commands.Basic.Properties()))
        await self.send(1, body.ContentBody(payload))
        await self.expect(commands.Basic.Ack)

    async def close(self) -> None:
        """Polite Connection.Close handshake, then close the socket."""
        try:
            with trio.move_on_after(5):
                await self.send(
                    0,
                    commands.Connection.Close(
                        reply_code=200, reply_text="bye", class_id=0, method_id=0
                    ),
                )
                while True:
                    _, value = await self.receive_frame()
                    if isinstance(value, commands.Connection.CloseOk):
                        break
        finally:
            await trio.aclose_forcefully(self.stream)


async def handshake(
    stream: trio.abc.Stream,
    *,
    connection_name: str | None = None,
    username: str = "guest",
    password: str = "guest",
    vhost: str = "/",
) -> RawAMQPConnection:
    """Run the AMQP handshake on ``stream`` and open channel 1."""
    conn = RawAMQPConnection(stream)
    await stream.send_all(PROTOCOL_HEADER)
    await conn.expect(commands.Connection.Start)
    properties: dict[str, Any] = {"product": "trioworker-tests-raw-amqp"}
    if connection_name is not None:
        properties["connection_name"] = connection_name
    await conn.send(
        0,
        commands.Connection.StartOk(
            client_properties=properties,
            mechanism="PLAIN",
            response=f"\0{username}\0{password}",
        ),
    )
    tune = await conn.expect(commands.Connection.Tune)
    await conn.send(
        0, commands.Connection.TuneOk(channel_max=1, frame_max=tune.frame_max, heartbeat=0)
    )
    await conn.send(0, commands.Connection.Open(virtual_host=vhost))
    await conn.expect(commands.Connection.OpenOk)
    await conn.send(1, commands.Channel.Open())
    await conn.expect(commands.Channel.OpenOk)
    return conn


@asynccontextmanager
async def open_raw_amqp(
    host: str = "127.0.0.1",
    port: int = 5672,
    *,
    connection_name: str | None = None,
) -> AsyncIterator[RawAMQPConnection]:
    """Connect, handshake (guest/guest, vhost "/"), yield; close politely on exit if possible.

    Connecting fails with ``trio.TooSlowError`` after ``CONNECT_TIMEOUT`` seconds.
    """
    with trio.fail_after(CONNECT_TIMEOUT):
        stream = await trio.open_tcp_stream(host, port)
        try:
            conn = await handshake(stream, connection_name=connection_name)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    try:
        yield conn
    finally:
        # Tolerate a connection the test already broke (cut by a proxy, closed by rabbitmqctl).
        with contextlib.suppress(
            RawAMQPError, trio.BrokenResourceError, trio.ClosedResourceError, OSError
        ):
            await conn.close()
