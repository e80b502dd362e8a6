"""Each way a connect can fail raises its own exception, within ``connection_timeout``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from pamqp import commands
from pamqp import frame as pamqp_frame

from tests.support.fake_servers import closing_server, free_port, garbage_server, silent_server
from tests.support.helpers import with_credentials, with_query, with_vhost
from trioworker.amqp import (
    AMQPConnectionError,
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    ConnectionTimeout,
    NotAMQPServerError,
    VirtualHostError,
    connect,
)

pytestmark = pytest.mark.broker

TIMEOUT = 5.0


async def connect_fails(url: str, expected: type[AMQPConnectionError]) -> AMQPConnectionError:
    """Connect to ``url`` and return the error, checking its type and that it came in time."""
    timeout = float(dict(p.split("=") for p in url.split("?")[1].split("&"))["connection_timeout"])
    start = trio.current_time()
    with pytest.raises(expected) as info:
        async with connect(url):
            pytest.fail("connect() should have failed")
    elapsed = trio.current_time() - start
    assert elapsed < timeout + 1, f"took {elapsed:.1f} s (timeout {timeout} s)"
    return info.value


def fake_url(port: int, timeout: float = TIMEOUT) -> str:
    return with_query(f"amqp://guest:guest@127.0.0.1:{port}/%2F", connection_timeout=timeout)


async def test_wrong_password(amqp_url: str) -> None:
    url = with_query(
        with_credentials(amqp_url, "guest", "n0t-the-pa55"), connection_timeout=TIMEOUT
    )
    error = await connect_fails(url, AuthenticationError)
    assert "guest" in str(error)
    assert "n0t-the-pa55" not in str(error)  # never leak the password


async def test_unknown_user(amqp_url: str, unique_name: Callable[..., str]) -> None:
    url = with_query(
        with_credentials(amqp_url, unique_name("user"), "x"), connection_timeout=TIMEOUT
    )
    await connect_fails(url, AuthenticationError)


async def test_wrong_vhost(amqp_url: str, unique_name: Callable[..., str]) -> None:
    vhost = unique_name("vhost")
    error = await connect_fails(
        with_query(with_vhost(amqp_url, vhost), connection_timeout=TIMEOUT), VirtualHostError
    )
    assert vhost in str(error)


async def test_refused_port() -> None:
    error = await connect_fails(fake_url(free_port()), ConnectError)
    assert isinstance(error, OSError)


async def test_silent_server_times_out() -> None:
    async with silent_server() as port:
        start = trio.current_time()
        error = await connect_fails(fake_url(port, timeout=1), ConnectionTimeout)
        assert trio.current_time() - start >= 0.9
    assert isinstance(error, TimeoutError)


@pytest.mark.parametrize(
    ("payload", "wait_for_header"),
    [
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", False),
        (b"SSH-2.0-OpenSSH_9.6\r\n", True),
        (b"AMQP\x01\x01\x00\x0a", True),  # a server speaking AMQP 0-10 answers its version
        (b"AMQP", True),  # a truncated protocol header, then EOF
        (b"\x01\x00\x00\x00", True),  # a truncated frame header, then EOF
    ],
    ids=["http", "http-early", "ssh", "amqp-0-10", "short-header", "short-frame"],
)
async def test_garbage_server(payload: bytes, wait_for_header: bool) -> None:
    async with garbage_server(payload, wait_for_header=wait_for_header) as port:
        await connect_fails(fake_url(port), NotAMQPServerError)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_closing_server(reset: bool) -> None:
    async with closing_server(reset=reset) as port:
        await connect_fails(fake_url(port), NotAMQPServerError)


CONNECTION_START = pamqp_frame.marshal(
    commands.Connection.Start(
        version_major=0,
        version_minor=9,
        server_properties={"product": "fake"},
        mechanisms="PLAIN",
        locales="en_US",
    ),
    0,
)


async def test_amqp_server_closing_mid_handshake() -> None:
    """It did speak AMQP (Connection.Start), so this is a lost connection, not a wrong
    server."""
    async with garbage_server(CONNECTION_START) as port:
        error = await connect_fails(fake_url(port), ConnectionLostError)
    assert not isinstance(error, NotAMQPServerError)
    assert "during the AMQP handshake" in str(error)


def test_error_classes_are_distinct() -> None:
    classes = [
        AuthenticationError,
        VirtualHostError,
        ConnectError,
        ConnectionTimeout,
        NotAMQPServerError,
    ]
    for cls in classes:
        others = [other for other in classes if other is not cls]
        assert not any(issubclass(cls, other) for other in others), cls
