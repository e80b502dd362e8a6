"""``memory://`` URLs and the transport registry of the library."""

from __future__ import annotations

import pytest

from trioworker.amqp import (
    ConnectError,
    URLError,
    connect,
    parse_url,
    register_transport,
    unregister_transport,
)
from trioworker.amqp._transports import transport_opener
from trioworker.testing import MemoryBroker


@pytest.mark.parametrize(
    ("url", "name", "vhost"),
    [
        ("memory://", "", "/"),
        ("memory:///", "", "/"),
        ("memory://Mixed-Case/", "Mixed-Case", "/"),
        ("memory://b/prod", "b", "prod"),
        ("memory://b/%2Fx", "b", "/x"),
        ("memory://a%20b/", "a b", "/"),
    ],
)
def test_memory_urls_name_a_broker_and_a_vhost(url: str, name: str, vhost: str) -> None:
    params = parse_url(url)
    assert (params.transport, params.host, params.virtual_host) == ("memory", name, vhost)
    assert (params.username, params.password) == ("guest", "guest")


def test_the_safe_url_never_shows_the_password() -> None:
    params = parse_url("memory://alice:s3cr%40t@b/%2F?heartbeat=5")
    assert (params.username, params.password, params.heartbeat) == ("alice", "s3cr@t", 5)
    assert params.safe_url() == "memory://alice@b/%2F"
    assert "s3cr" not in repr(params)
    assert parse_url("memory://b/").safe_url() == "memory://b/%2F"


def test_a_port_is_refused() -> None:
    with pytest.raises(URLError, match="take no port"):
        parse_url("memory://b:5672/")
    with pytest.raises(URLError, match="take no port"):
        parse_url("memory://user:pw@b:/")


def test_only_in_process_schemes_take_a_transport() -> None:
    with pytest.raises(ValueError, match="only memory"):
        register_transport("amqp", transport_opener("memory"))  # type: ignore[arg-type]


async def test_without_a_transport_memory_urls_are_a_connect_error() -> None:
    opener = transport_opener("memory")
    assert opener is not None  # trioworker.testing registered it on import
    unregister_transport("memory")
    try:
        with pytest.raises(ConnectError, match="nothing serves memory:// URLs"):
            async with connect("memory://x/"):
                pass
    finally:
        register_transport("memory", opener)
    broker = MemoryBroker()
    async with broker.running(), connect(broker.url):
        pass
