"""A server announcing a 2**62-byte body and streaming frames: the client closes the
connection at the content header, with both sizes in the error, and memory stays bounded
(issue 11, item 5)."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from pamqp import body, commands, frame, header

from tests.support._util import (
    CONNECTION_ERRORS,
    listener_port,
    open_listener,
    open_service_nursery,
)
from tests.support.helpers import MUST_HAPPEN
from trioworker.amqp import ConnectionLostError, RemoteProtocolError, connect

FRAME_MAX = 131072


class _Frames:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def read(self) -> object:
        while True:
            if len(self.buffer) >= 7:
                size = int.from_bytes(self.buffer[3:7], "big") + 8
                if len(self.buffer) >= size:
                    raw, self.buffer = self.buffer[:size], self.buffer[size:]
                    return frame.unmarshal(raw)[2]
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data


@asynccontextmanager
async def huge_message_server(announced: int) -> AsyncIterator[tuple[int, list[int]]]:
    """Handshake, a channel, a consumer; then a Deliver announcing ``announced`` bytes and
    body frames until the client hangs up. Yields the port and [body bytes sent]."""
    sent = [0]

    async def handler(stream: trio.SocketStream) -> None:
        frames = _Frames(stream)

        async def send(channel: int, value: object) -> None:
            await stream.send_all(frame.marshal(value, channel))  # type: ignore[arg-type]

        try:
            while len(frames.buffer) < 8:
                frames.buffer += await stream.receive_some(8)
            frames.buffer = frames.buffer[8:]
            await send(0, commands.Connection.Start(server_properties={"product": "fake"}))
            await frames.read()  # StartOk
            await send(0, commands.Connection.Tune(2047, FRAME_MAX, 0))
            await frames.read()  # TuneOk
            await frames.read()  # Open
            await send(0, commands.Connection.OpenOk())
            await frames.read()  # Channel.Open
            await send(1, commands.Channel.OpenOk())
            consume = await frames.read()
            assert isinstance(consume, commands.Basic.Consume)
            await send(1, commands.Basic.ConsumeOk(consume.consumer_tag))
            await send(1, commands.Basic.Deliver(consume.consumer_tag, 1, False, "", "q"))
            await send(1, header.ContentHeader(0, announced, commands.Basic.Properties()))
            chunk = frame.marshal(body.ContentBody(b"x" * (FRAME_MAX - 8)), 1)
            with trio.move_on_after(MUST_HAPPEN):
                while True:  # stream until the client hangs up
                    await stream.send_all(chunk)
                    sent[0] += FRAME_MAX - 8
        except (EOFError, *CONNECTION_ERRORS):
            pass

    listener = await open_listener()
    async with open_service_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, [listener])
        try:
            yield listener_port(listener), sent
        finally:
            listener.socket.close()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("announced", "option"), [(2**62, None), (2 * 1024 * 1024, 1024 * 1024)], ids=["2**62", "1MiB"]
)
async def test_an_announced_oversized_body_closes_the_connection_with_the_sizes(
    announced: int, option: int | None
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limit = option or 128 * 1024 * 1024
    query = "" if option is None else f"?max_message_size={option}"
    async with huge_message_server(announced) as (port, sent):
        with trio.fail_after(MUST_HAPPEN):
            async with connect(f"amqp://guest:guest@127.0.0.1:{port}/%2F{query}") as conn:
                channel = await conn.open_channel()
                consumer = await channel.basic_consume("q")
                with pytest.raises(ConnectionLostError) as info:
                    async for _ in consumer:
                        pytest.fail("the oversized message was delivered")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteProtocolError)
    assert cause.reply_code == 506
    assert f"{announced} bytes" in str(cause) and f"{limit} bytes" in str(cause)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100
    assert sent[0] < 64 * 1024 * 1024  # the client hung up: the server could not go on
