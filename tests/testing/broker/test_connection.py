"""The handshake, heartbeats, closing, and what a misbehaving client gets: RabbitMQ's
answers, and a broker that keeps serving everyone else."""

from __future__ import annotations

import pytest
import trio
from pamqp import commands

from trioworker.amqp import (
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    VirtualHostError,
    connect,
)
from trioworker.testing import MemoryBroker

from .raw import PROTOCOL_HEADER, RawClient, open_stream, raw_client
from .util import until


async def test_the_real_client_connects_and_sees_the_broker(mbroker: MemoryBroker) -> None:
    async with connect(mbroker.url) as conn:
        assert conn.server_properties["product"] == "trioworker memory broker"
        assert conn.server_properties["capabilities"]["direct_reply_to"] is True
        assert conn.frame_max == 131072
        assert conn.heartbeat == 60
        assert mbroker.connections == 1
    await until(lambda: mbroker.connections == 0)


async def test_wrong_password_is_refused_with_403(mbroker: MemoryBroker) -> None:
    url = mbroker.url.replace("memory://", "memory://guest:nope@")
    with pytest.raises(AuthenticationError, match="ACCESS_REFUSED - Login was refused"):
        async with connect(url):
            pass


async def test_other_users_are_accepted_when_configured() -> None:
    broker = MemoryBroker(users={"alice": "s3cret"})
    async with broker.running():
        async with connect(broker.url.replace("memory://", "memory://alice:s3cret@")):
            pass
        with pytest.raises(AuthenticationError):
            async with connect(broker.url):  # guest is not a user of this one
                pass


async def test_unknown_vhost_is_530(mbroker: MemoryBroker) -> None:
    with pytest.raises(VirtualHostError, match="NOT_ALLOWED - vhost prod not found"):
        async with connect(mbroker.url + "prod"):
            pass
    mbroker.add_vhost("prod")
    async with connect(mbroker.url + "prod") as conn, conn.channel() as ch:
        await ch.queue_declare("only-in-prod")
    assert mbroker.queues("prod") == ["only-in-prod"]
    assert mbroker.queues() == []


async def test_a_broker_that_is_not_running_is_a_connect_error() -> None:
    broker = MemoryBroker(name="nobody-runs-me")
    with pytest.raises(ConnectError, match="no in-memory broker named 'nobody-runs-me'"):
        async with connect(broker.url):
            pass


async def test_two_running_brokers_cannot_share_a_name() -> None:
    async with MemoryBroker(name="twin").running():
        with pytest.raises(RuntimeError, match="already running"):
            async with MemoryBroker(name="twin").running():
                pass


async def test_leaving_running_closes_connections_with_320() -> None:
    broker = MemoryBroker()
    errors: list[ConnectionClosedError] = []

    async def client(ready: trio.Event) -> None:
        async with connect(broker.url) as conn:
            ready.set()
            try:
                await conn.wait_closed()
            except ConnectionClosedError as error:
                errors.append(error)

    async with trio.open_nursery() as nursery, broker.running():
        ready = trio.Event()
        nursery.start_soon(client, ready)
        await ready.wait()
    assert [(e.reply_code, e.reply_text) for e in errors] == [
        (320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    ]


async def test_close_all_connections_is_seen_by_the_client(mbroker: MemoryBroker) -> None:
    async with connect(mbroker.url) as conn:
        mbroker.close_all_connections("maintenance")
        with pytest.raises(ConnectionClosedError) as info:
            await conn.wait_closed()
        assert info.value.reply_code == 320
        assert "maintenance" in info.value.reply_text


async def test_other_protocol_versions_get_our_header_and_a_hang_up(mbroker: MemoryBroker) -> None:
    client = RawClient(await open_stream(mbroker))
    await client.send_bytes(b"AMQP\x01\x01\x00\x0a")
    assert await client.stream.receive_some(100) == PROTOCOL_HEADER
    assert await client.at_eof()


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"\x01\x00\x01\x00\x00\x00\x04\x00\x14\x00\x0a\x00", 501),  # end octet 0x00, not 0xce
        (b"\x07\x00\x01\x00\x00\x00\x00\xce", 501),  # frame type 7
        (b"\x01\x00\x01\x00\x00\x00\x05\x00\x32\x00\x0a\xff\xce", 502),  # truncated declare
        (b"\x01\x00\x01\x00\x00\x00\x04\x12\x34\x56\x78\xce", 502),  # unknown method
        (b"\x01\x00\x01\x7f\xff\xff\xff", 501),  # a 2 GiB frame: refused from its header
        (b"\x02\x00\x01\x00\x00\x00\x0e" + bytes(14) + b"\xce", 505),  # header, no publish
    ],
)
async def test_malformed_frames_close_that_connection_only(
    mbroker: MemoryBroker, garbage: bytes, code: int
) -> None:
    async with connect(mbroker.url) as bystander, raw_client(mbroker) as client:
        await client.send_bytes(garbage)
        _, close = await client.until("Connection.Close")
        assert close.reply_code == code
        async with bystander.channel() as ch:  # the broker still serves the others
            await ch.queue_declare("still-here")


async def test_a_frame_on_a_channel_never_opened_is_504(mbroker: MemoryBroker) -> None:
    async with raw_client(mbroker) as client:
        await client.send(7, commands.Queue.Declare(queue="x"))
        _, close = await client.until("Connection.Close")
        assert (close.reply_code, close.reply_text) == (
            504,
            "CHANNEL_ERROR - expected 'channel.open'",
        )
        await client.send(0, commands.Connection.CloseOk())
        assert await client.at_eof()


async def test_a_client_that_falls_silent_is_dropped_after_two_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(heartbeat=5)
    async with broker.running():
        client = RawClient(await open_stream(broker))
        await client.send_bytes(PROTOCOL_HEADER)
        await client.until("Connection.Start")
        await client.send(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest", locale="en"
            ),
        )
        await client.until("Connection.Tune")
        await client.send(
            0, commands.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=5)
        )
        await client.send(0, commands.Connection.Open(virtual_host="/"))
        await client.until("Connection.OpenOk")
        started = trio.current_time()
        beats = 0
        while True:  # read without ever writing: the broker beats, then hangs up
            data = await client.stream.receive_some(1000)
            if not data:
                break
            beats += data.count(b"\x08\x00\x00\x00\x00\x00\x00\xce")
        assert 10 <= trio.current_time() - started <= 13
        assert beats >= 2
        assert broker.connections == 0


async def test_a_handshake_that_never_finishes_is_dropped(
    autojump_clock: trio.testing.MockClock, mbroker: MemoryBroker
) -> None:
    client = RawClient(await open_stream(mbroker))
    started = trio.current_time()
    assert await client.at_eof()
    assert trio.current_time() - started == pytest.approx(10, abs=0.5)


async def test_heartbeats_keep_an_idle_connection_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker(heartbeat=2)
    async with broker.running(), connect(broker.url) as conn:
        await trio.sleep(30)
        assert not conn.is_closed
        async with conn.channel() as ch:
            await ch.queue_declare("alive")


async def test_an_internal_error_closes_only_that_connection(
    mbroker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioworker.testing._broker._vhost import VHost

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the broker")

    async with connect(mbroker.url) as bystander, connect(mbroker.url) as victim:
        monkeypatch.setattr(VHost, "declare_queue", broken)
        async with victim.channel() as ch:
            with pytest.raises(ConnectionClosedError) as info:
                await ch.queue_declare("boom")
        assert info.value.reply_code == 541
        monkeypatch.undo()
        async with bystander.channel() as ch:
            await ch.queue_declare("fine")
