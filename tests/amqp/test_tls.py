"""amqps:// through the TLS proxy (trustme CA, certificate for localhost)."""

from __future__ import annotations

import os

import pytest
import trio

from tests.support.helpers import MUST_HAPPEN, with_query
from tests.support.tls import open_tls_proxy
from trioworker.amqp import ConnectError, connect

pytestmark = pytest.mark.broker


async def test_amqps_with_trusted_context(broker_host_port, resources) -> None:
    queue = resources.queue()
    body = os.urandom(300_000)  # several TLS records and AMQP frames
    async with open_tls_proxy(*broker_host_port) as tls:
        url = tls.amqp_url()
        assert url.startswith("amqps://guest:guest@localhost:")
        with trio.fail_after(MUST_HAPPEN):
            async with connect(url, ssl_context=tls.client_context()) as conn:
                assert isinstance(conn._stream, trio.SSLStream)
                assert conn.server_properties["product"] == "RabbitMQ"
                async with conn.channel() as channel:
                    ok = await channel.queue_declare(queue)
                    assert ok.queue == queue
                    await channel.confirm_select()
                    await channel.basic_publish(body, routing_key=queue)
                    delivery = await channel.basic_get(queue, no_ack=True)
                    assert delivery is not None
                    assert delivery.body == body
        assert tls.accepted == 1
        assert tls.handshakes_failed == 0


async def test_amqps_default_context_verifies_the_certificate(broker_host_port) -> None:
    async with open_tls_proxy(*broker_host_port) as tls:
        url = with_query(tls.amqp_url(), connection_timeout=5)
        start = trio.current_time()
        with pytest.raises(ConnectError, match="certificate verif"):
            async with connect(url):
                pytest.fail("an untrusted certificate was accepted")
        assert trio.current_time() - start < 6


async def test_plain_url_with_ssl_context_uses_tls(broker_host_port) -> None:
    async with open_tls_proxy(*broker_host_port) as tls:
        url = tls.amqp_url().replace("amqps://", "amqp://", 1)
        with trio.fail_after(MUST_HAPPEN):
            async with connect(url, ssl_context=tls.client_context()) as conn:
                assert isinstance(conn._stream, trio.SSLStream)
                async with conn.channel():
                    pass
