"""Tests for the test helpers themselves (tests/conftest.py, tests/support/).

They use raw sockets and tests.support.raw_amqp, never trioworker's client: the helpers must be
proven independently of the code they will be used to test.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from pamqp import commands

from tests.conftest import AMQP_URL_ENV, DEFAULT_AMQP_URL, QueueCleanup, broker_address
from tests.support import rabbitmqctl
from tests.support.fake_servers import closing_server, free_port, garbage_server, silent_server
from tests.support.proxy import open_tcp_proxy
from tests.support.raw_amqp import PROTOCOL_HEADER, open_raw_amqp
from tests.support.tls import open_tls_proxy

REPO = Path(__file__).resolve().parent.parent
QUIET = 0.3  # "nothing arrives" window; generous bounds are for things that must arrive
MUST_ARRIVE = 10.0


async def receive_or_none(stream: trio.abc.ReceiveStream, wait: float = QUIET) -> bytes | None:
    """Bytes if any arrive within ``wait`` seconds, else None."""
    with trio.move_on_after(wait):
        return bytes(await stream.receive_some(65536))
    return None


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    with trio.fail_after(MUST_ARRIVE):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return bytes(data)


async def expect_connection_start(stream: trio.abc.Stream) -> bytes:
    """Send the AMQP protocol header; the broker must answer with a method frame (0x01)."""
    await stream.send_all(PROTOCOL_HEADER)
    with trio.fail_after(MUST_ARRIVE):
        data = bytes(await stream.receive_some(65536))
    assert data[:1] == b"\x01", data[:32]
    return data


@pytest.fixture
def broker(amqp_url: str) -> tuple[str, int]:
    return broker_address(amqp_url)


# --- conftest fixtures ---------------------------------------------------------------------


def test_amqp_url_default(amqp_url: str) -> None:
    expected = os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL
    assert amqp_url == expected
    assert DEFAULT_AMQP_URL == "amqp://guest:guest@127.0.0.1:5672/%2F"


def test_unique_name_format_and_uniqueness(unique_name: Callable[..., str]) -> None:
    first, second = unique_name(), unique_name("exchange")
    assert re.fullmatch(r"tw-test-q-unique_name_format_and_uniqueness-[0-9a-f]{8}", first)
    assert second.startswith("tw-test-exchange-unique_name_format_and_uniqueness-")
    assert len({unique_name() for _ in range(50)}) == 50


@pytest.mark.parametrize("case", ["a[b/c] d"])
def test_unique_name_sanitises_parametrized_ids(unique_name: Callable[..., str], case: str) -> None:
    assert re.fullmatch(r"tw-test-q-[A-Za-z0-9_.]+-[0-9a-f]{8}", unique_name()), unique_name()


def _run_pytest(env_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, AMQP_URL_ENV: env_url}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_preflight_fails_loudly_when_broker_is_down() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    proc = _run_pytest(dead, "tests/test_support.py", "-k", "test_proxy_forwards_to_broker")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "scripts/ensure-rabbitmq.sh" in output
    assert not re.search(r"\d+ (passed|skipped)", output), output


def test_preflight_ignores_runs_without_broker_tests() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    proc = _run_pytest(dead, "tests/test_support.py", "-k", "test_unique_name_format")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.broker
async def test_cleanup_queues_deletes_registered_queues(
    unique_name: Callable[..., str], cleanup_queues: QueueCleanup, broker: tuple[str, int]
) -> None:
    name = cleanup_queues.add(unique_name())
    missing = cleanup_queues.add(unique_name())
    async with open_raw_amqp(*broker) as conn:
        await conn.declare_queue(name)
    result = await trio.to_thread.run_sync(cleanup_queues.delete_all)
    assert result == {name: True, missing: False}
    assert name not in await rabbitmqctl.list_queues_async()
    assert cleanup_queues.names == []


# --- rabbitmqctl helpers -------------------------------------------------------------------


@pytest.mark.broker
async def test_rabbitmqctl_queue_helpers(
    unique_name: Callable[..., str], cleanup_queues: QueueCleanup, broker: tuple[str, int]
) -> None:
    name = cleanup_queues.add(unique_name())
    async with open_raw_amqp(*broker) as conn:
        await conn.declare_queue(name)
        await conn.publish(name, b"one")
        await conn.publish(name, b"two")
        ok = await conn.declare_queue(name, passive=True)
        assert ok.message_count == 2

    queues = await rabbitmqctl.list_queues_async()
    assert isinstance(queues, dict)
    assert queues[name] == (2, 0)
    assert queues[name].messages == 2

    await rabbitmqctl.purge_queue_async(name)
    assert (await rabbitmqctl.list_queues_async())[name] == (0, 0)

    assert await rabbitmqctl.delete_queue_async(name) is True
    assert name not in await rabbitmqctl.list_queues_async()
    assert await rabbitmqctl.delete_queue_async(name) is False  # already gone: no error

    with pytest.raises(rabbitmqctl.RabbitmqctlError, match="not_found"):
        rabbitmqctl.purge_queue(name)


@pytest.mark.broker
async def test_rabbitmqctl_close_connection_by_name(
    unique_name: Callable[..., str], broker: tuple[str, int]
) -> None:
    conn_name = unique_name("conn")
    async with open_raw_amqp(*broker, connection_name=conn_name) as conn:
        infos = [c for c in await rabbitmqctl.list_connections_async()]
        mine = [c for c in infos if c.connection_name == conn_name]
        assert len(mine) == 1 and mine[0].pid.startswith("<") and mine[0].user == "guest"

        closed = await rabbitmqctl.close_connection_by_name_async(conn_name, "test says bye")
        assert closed == 1
        with trio.fail_after(MUST_ARRIVE):
            frame = await conn.expect(commands.Connection.Close)
        assert frame.reply_code == 320  # CONNECTION_FORCED
        assert "test says bye" in frame.reply_text

    with pytest.raises(LookupError, match=conn_name):
        rabbitmqctl.close_connection_by_name(conn_name)
    assert rabbitmqctl.close_connection_by_name(conn_name, missing_ok=True) == 0


# close_all_connections is deliberately not exercised here: it would kill every connection on
# the shared broker, including those of other suites running at the same time.


# --- TCP proxy -----------------------------------------------------------------------------


@pytest.mark.broker
async def test_proxy_forwards_to_broker(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        assert proxy.port != broker[1]
        assert proxy.amqp_url() == f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await expect_connection_start(stream)
        assert proxy.accepted == 1


@pytest.mark.broker
async def test_proxy_carries_a_full_amqp_session(
    broker: tuple[str, int], unique_name: Callable[..., str], cleanup_queues: QueueCleanup
) -> None:
    name = cleanup_queues.add(unique_name())
    async with (
        open_tcp_proxy(*broker) as proxy,
        open_raw_amqp("127.0.0.1", proxy.port) as conn,
    ):
        ok = await conn.declare_queue(name)
        assert ok.queue == name


@pytest.mark.broker
@pytest.mark.parametrize("reset", [True, False])
async def test_proxy_cut_closes_connections(broker: tuple[str, int], reset: bool) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await expect_connection_start(stream)
            assert proxy.active == 1
            assert await proxy.cut(reset=reset) == 1
            assert proxy.active == 0
            with trio.fail_after(MUST_ARRIVE):
                if reset:
                    with pytest.raises(trio.BrokenResourceError):
                        await stream.receive_some(65536)
                else:
                    assert await stream.receive_some(65536) == b""

        # The proxy keeps accepting after a cut: that's what reconnect tests need.
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await expect_connection_start(stream)
        assert proxy.accepted == 2


@pytest.mark.broker
async def test_proxy_cut_nowait_is_synchronous(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await expect_connection_start(stream)
            assert proxy.cut_nowait() == 1
            with trio.fail_after(MUST_ARRIVE), pytest.raises(trio.BrokenResourceError):
                await stream.receive_some(65536)


@pytest.mark.broker
async def test_proxy_stall_holds_data_and_resume_releases_it(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            proxy.stall()
            assert proxy.stalled
            await stream.send_all(PROTOCOL_HEADER)
            assert await receive_or_none(stream, 0.5) is None
            assert proxy.active == 1  # still open, just silent
            proxy.resume()
            with trio.fail_after(MUST_ARRIVE):
                data = await stream.receive_some(65536)
            assert data[:1] == b"\x01"


@pytest.mark.broker
async def test_proxy_refuse_new(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        proxy.refuse_new = True
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", proxy.port)
        proxy.refuse_new = False
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await expect_connection_start(stream)
        assert proxy.accepted == 1


@pytest.mark.broker
async def test_proxy_inject_sends_raw_bytes_to_client(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await expect_connection_start(stream)  # broker now waits for us: link is quiet
            assert await proxy.inject(b"\x08garbage\xce") == 1
            with trio.fail_after(MUST_ARRIVE):
                assert await stream.receive_some(65536) == b"\x08garbage\xce"


@pytest.mark.broker
async def test_proxy_transforms(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        proxy.transform_downstream = lambda data: b"\x09" + data[1:]
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(PROTOCOL_HEADER)
            with trio.fail_after(MUST_ARRIVE):
                assert (await stream.receive_some(65536))[:1] == b"\x09"

        proxy.transform_downstream = None
        proxy.transform_upstream = lambda data: b""  # black-hole client -> broker
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(PROTOCOL_HEADER)
            assert await receive_or_none(stream, 0.5) is None


@pytest.mark.broker
async def test_leaving_proxy_context_closes_connections(broker: tuple[str, int]) -> None:
    async with open_tcp_proxy(*broker) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await expect_connection_start(stream)
        port = proxy.port
    async with stream:
        with trio.fail_after(MUST_ARRIVE):
            assert await stream.receive_some(65536) == b""
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_proxy_context_reraises_body_exception_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_tcp_proxy("127.0.0.1", free_port()):
            raise KeyError("boom")


async def test_proxy_to_dead_target_closes_client() -> None:
    async with open_tcp_proxy("127.0.0.1", free_port()) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            assert await read_until_eof(stream) == b""


# --- TLS proxy -----------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
async def test_tls_proxy_handshake_with_client_context(
    broker: tuple[str, int], server_hostname: str
) -> None:
    async with open_tls_proxy(*broker) as tls:
        assert tls.amqp_url() == f"amqps://guest:guest@localhost:{tls.port}/%2F"
        raw = await trio.open_tcp_stream("127.0.0.1", tls.port)
        stream = trio.SSLStream(raw, tls.client_context(), server_hostname=server_hostname)
        async with stream:
            with trio.fail_after(MUST_ARRIVE):
                await stream.do_handshake()
            await expect_connection_start(stream)


@pytest.mark.broker
async def test_tls_proxy_rejected_by_default_context(broker: tuple[str, int]) -> None:
    async with open_tls_proxy(*broker) as tls:
        raw = await trio.open_tcp_stream("127.0.0.1", tls.port)
        stream = trio.SSLStream(raw, ssl.create_default_context(), server_hostname="localhost")
        async with stream:
            with trio.fail_after(MUST_ARRIVE), pytest.raises(trio.BrokenResourceError) as info:
                await stream.do_handshake()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        with trio.fail_after(MUST_ARRIVE):
            while tls.handshakes_failed < 1:  # noqa: ASYNC110 - a counter, no event to wait on
                await trio.sleep(0.01)


@pytest.mark.broker
async def test_tls_proxy_raw_amqp_session(broker: tuple[str, int]) -> None:
    async with open_tls_proxy(*broker) as tls:
        ssl_stream = await trio.open_ssl_over_tcp_stream(
            "localhost", tls.port, ssl_context=tls.client_context()
        )
        async with ssl_stream:
            await expect_connection_start(ssl_stream)
            await tls.cut()
            with trio.fail_after(MUST_ARRIVE), pytest.raises(trio.BrokenResourceError):
                await ssl_stream.receive_some(65536)


# --- fake servers --------------------------------------------------------------------------


async def test_silent_server_never_answers() -> None:
    async with silent_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(PROTOCOL_HEADER)
            assert await receive_or_none(stream, 0.5) is None


async def test_garbage_server_sends_payload_then_eof() -> None:
    async with garbage_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(PROTOCOL_HEADER)
            assert await read_until_eof(stream) == b"HTTP/1.1 400 Bad Request\r\n\r\n"

    async with garbage_server(b"\x01\x00\x00garbage", wait_for_header=False) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            assert await read_until_eof(stream) == b"\x01\x00\x00garbage"


async def test_closing_server_closes_immediately() -> None:
    async with closing_server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            assert await read_until_eof(stream) == b""

    async with closing_server(reset=True) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with trio.fail_after(MUST_ARRIVE), pytest.raises(trio.BrokenResourceError):
                await stream.receive_some(65536)


async def test_free_port_refuses_connections() -> None:
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", free_port())
