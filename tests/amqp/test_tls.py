"""amqps:// through the TLS proxy (trustme CA, certificate for localhost)."""

from __future__ import annotations

import os

import pytest
import trio

from tests.support.fake_servers import garbage_server
from tests.support.helpers import MUST_HAPPEN, with_query
from tests.support.tls import open_tls_proxy
from trioworker.amqp import ConnectError, TLSError, TLSVerificationError, connect

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


# ------------------------------------------------------- issue 11: TLS errors


#: What a TLS server (RabbitMQ's TLS listener) answers to our plaintext protocol header: a
#: fatal unexpected_message alert. Read as an AMQP frame header it announced 131594 bytes.
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x0a"


async def test_plaintext_to_a_tls_port_says_use_amqps() -> None:
    async with garbage_server(TLS_ALERT) as port:
        url = f"amqp://guest:guest@127.0.0.1:{port}/%2F?connection_timeout=5"
        with trio.fail_after(MUST_HAPPEN), pytest.raises(ConnectError) as info:
            async with connect(url):
                pytest.fail("connected in plaintext to a TLS port")
    assert "this port speaks TLS: use amqps://" in str(info.value)
    assert "frame_max" not in str(info.value)


async def test_untrusted_certificate_is_a_tls_verification_error(broker_host_port) -> None:
    async with open_tls_proxy(*broker_host_port) as tls:
        url = with_query(tls.amqp_url(password="Secret-Marker"), connection_timeout=5)
        with trio.fail_after(MUST_HAPPEN), pytest.raises(TLSVerificationError) as info:
            async with connect(url):
                pytest.fail("an untrusted certificate was accepted")
    error = info.value
    assert isinstance(error, TLSError) and isinstance(error, ConnectError)
    assert error.host == "localhost"
    assert "certificate verify failed" in str(error) or "unable to get local issuer" in str(error)
    assert "localhost" in str(error) and "ssl_context" in str(error)
    assert "Secret-Marker" not in str(error)


async def test_hostname_mismatch_is_a_tls_verification_error(broker_host_port) -> None:
    # The certificate is valid for localhost and 127.0.0.1; the proxy listens on 127.0.0.2.
    async with open_tls_proxy(*broker_host_port, host="127.0.0.2") as tls:
        url = with_query(f"amqps://guest:guest@127.0.0.2:{tls.port}/%2F", connection_timeout=5)
        with trio.fail_after(MUST_HAPPEN), pytest.raises(TLSVerificationError) as info:
            async with connect(url, ssl_context=tls.client_context()):
                pytest.fail("a certificate for another host was accepted")
    assert info.value.host == "127.0.0.2"
    assert "mismatch" in info.value.reason.lower()
    assert "not valid for that name" in str(info.value)
