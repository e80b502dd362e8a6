"""A TLS-terminating proxy (trustme CA) in front of the plaintext broker, for amqps:// tests.

RabbitMQ on the test box only speaks plaintext on 5672. Rather than reconfigure it, the tests
put a real TLS server in front: trio.SSLStream on 127.0.0.1:<ephemeral>, plaintext to the
broker. The certificate comes from a throwaway trustme CA, valid for "localhost" and
"127.0.0.1", so verification (hostname included) is exercised for real. It is a
:class:`~tests.support.proxy.TCPProxy`, so stall/cut/inject work on TLS connections too
(``inject`` writes inside the TLS stream).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trustme

from ._util import open_service_nursery
from .proxy import TCPProxy

HANDSHAKE_TIMEOUT = 10.0


class TLSProxy(TCPProxy):
    """TLS on the client side, plaintext to the target. ``ca`` signs the server cert."""

    scheme = "amqps"

    def __init__(
        self,
        target_host: str,
        target_port: int,
        nursery: trio.Nursery,
        *,
        host: str = "127.0.0.1",
        ca: trustme.CA | None = None,
    ) -> None:
        self.ca = ca if ca is not None else trustme.CA()
        self.server_cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(self.server_context)
        self.handshakes_failed = 0
        super().__init__(target_host, target_port, nursery, host=host, wrap_client=self._wrap)

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that trusts (only) this proxy's CA; hostname check on."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
        context.load_verify_locations(cadata=self.ca.cert_pem.bytes().decode("ascii"))
        return context

    def amqp_url(self, user: str = "guest", password: str = "guest", vhost: str = "%2F") -> str:
        """``amqps://...@localhost:PORT/...`` (a name the certificate is valid for)."""
        return f"{self.scheme}://{user}:{password}@localhost:{self.port}/{vhost}"

    async def _wrap(self, raw: trio.SocketStream) -> trio.abc.Stream:
        stream = trio.SSLStream(raw, self.server_context, server_side=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError):
            self.handshakes_failed += 1
            raise trio.BrokenResourceError("TLS handshake with client failed") from None
        return stream


@asynccontextmanager
async def open_tls_proxy(
    target_host: str, target_port: int, *, host: str = "127.0.0.1", ca: trustme.CA | None = None
) -> AsyncIterator[TLSProxy]:
    """Start a :class:`TLSProxy` to ``target_host:target_port`` on an ephemeral port."""
    async with open_service_nursery() as nursery:
        proxy = TLSProxy(target_host, target_port, nursery, host=host, ca=ca)
        try:
            nursery.start_soon(proxy._serve)
            yield proxy
        finally:
            proxy._close_listener()
            proxy.cut_nowait(reset=False)
