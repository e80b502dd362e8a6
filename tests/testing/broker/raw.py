"""A raw client for the memory broker's tests: send arbitrary bytes, read frames back.

The real client never sends a malformed frame; this does, to prove the broker closes the
connection with the right code and survives.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from pamqp import commands, frame

from trioworker.amqp import parse_url
from trioworker.amqp._transports import transport_opener
from trioworker.testing import MemoryBroker

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class RawClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, channel: int, method: Any) -> None:
        await self.stream.send_all(frame.marshal(method, channel))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> tuple[int, Any]:
        """The next frame (heartbeats skipped); ``(0, None)`` at EOF."""
        while True:
            while (
                len(self.buffer) < 7
                or len(self.buffer) < 8 + struct.unpack_from(">I", self.buffer, 3)[0]
            ):
                data = await self.stream.receive_some(65536)
                if not data:
                    return 0, None
                self.buffer += data
            used, channel, value = frame.unmarshal(self.buffer)
            self.buffer = self.buffer[used:]
            if value.name != "Heartbeat":
                return channel, value

    async def until(self, name: str) -> tuple[int, Any]:
        """Skip frames until one called ``name`` (e.g. ``Connection.Close``)."""
        with trio.fail_after(10):
            while True:
                channel, value = await self.receive()
                if value is None:
                    raise AssertionError(f"EOF before {name}")
                if value.name == name:
                    return channel, value

    async def at_eof(self) -> bool:
        with trio.fail_after(60):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return True


async def open_stream(broker: MemoryBroker) -> trio.abc.Stream:
    opener = transport_opener("memory")
    assert opener is not None
    return await opener(parse_url(broker.url))


@asynccontextmanager
async def raw_client(broker: MemoryBroker, *, channel: bool = True) -> AsyncIterator[RawClient]:
    """A client past the handshake (and with channel 1 open)."""
    client = RawClient(await open_stream(broker))
    await client.send_bytes(PROTOCOL_HEADER)
    await client.until("Connection.Start")
    await client.send(
        0,
        commands.Connection.StartOk(
            client_properties={"capabilities": {"consumer_cancel_notify": True}},
            mechanism="PLAIN",
            response="\0guest\0guest",
            locale="en_US",
        ),
    )
    _, tune = await client.until("Connection.Tune")
    await client.send(
        0,
        commands.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0
        ),
    )
    await client.send(0, commands.Connection.Open(virtual_host="/"))
    await client.until("Connection.OpenOk")
    if channel:
        await client.send(1, commands.Channel.Open())
        await client.until("Channel.OpenOk")
    try:
        yield client
    finally:
        await client.stream.aclose()
