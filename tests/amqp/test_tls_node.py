"""TLS against a real RabbitMQ TLS listener (issue 11, item 8): a private node of our own
with a trustme CA, ``verify_peer`` and ``fail_if_no_peer_cert`` (mutual TLS).

The node (``tw-tls-<pid>@localhost``) has its own ports, data, logs and no plugins; it is
started once per session and stopped at the end, whatever happens. Its certificate is valid
for ``localhost`` only, so connecting to ``127.0.0.1`` is a host name mismatch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from tests.support.helpers import MUST_HAPPEN
from trioworker import App, open_app
from trioworker.amqp import (
    ConnectError,
    TLSCertificateRequiredError,
    TLSVerificationError,
    connect,
)

pytestmark = pytest.mark.slow

RABBITMQ_BIN = Path(os.environ.get("TRIOWORKER_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TLSNode:
    ca: trustme.CA
    client_cert: trustme.LeafCert
    tls_port: int
    tcp_port: int

    def url(self, host: str = "localhost") -> str:
        return f"amqps://guest:guest@{host}:{self.tls_port}/%2F?connection_timeout=10"

    def context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if client_cert:
            self.client_cert.configure_cert(context)
        return context


@pytest.fixture(scope="session")
def tls_node() -> Iterator[TLSNode]:
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("tw-client")
    base = Path(tempfile.mkdtemp(prefix="tw-rabbit-tls-"))
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(base / "server.pem"))
    server.private_key_pem.write_to_path(str(base / "server.key"))
    tcp_port, tls_port, dist_port = _free_port(), _free_port(), _free_port()
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{tcp_port}\n"
        f"listeners.ssl.default = {tls_port}\n"
        f"ssl_options.cacertfile = {base / 'ca.pem'}\n"
        f"ssl_options.certfile = {base / 'server.pem'}\n"
        f"ssl_options.keyfile = {base / 'server.key'}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\n"
        "disk_free_limit.absolute = 1MB\n"
    )
    (base / "enabled_plugins").write_text("[].")
    nodename = f"tw-tls-{os.getpid()}@localhost"
    env = dict(
        os.environ,
        RABBITMQ_NODENAME=nodename,
        RABBITMQ_NODE_PORT=str(tcp_port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
        RABBITMQ_LOG_BASE=str(base / "log"),
        RABBITMQ_PID_FILE=str(base / "node.pid"),
        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
        RABBITMQ_ENABLED_PLUGINS="",
    )
    out = open(base / "server.out", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [str(RABBITMQ_BIN / "rabbitmq-server")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", nodename, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    try:
        deadline = time.monotonic() + START_TIMEOUT
        while ctl("await_startup", "--timeout", "30", timeout=40).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (base / "server.out").read_text(errors="replace")[-3000:]
                pytest.fail(f"the private TLS node did not start:\n{log}")
            time.sleep(0.5)
        yield TLSNode(ca, client, tls_port, tcp_port)
    finally:
        try:
            ctl("stop", timeout=60)
            process.wait(timeout=60)
        except (subprocess.SubprocessError, OSError):
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.SubprocessError):
                process.wait(timeout=10)
        out.close()
        shutil.rmtree(base, ignore_errors=True)


async def test_private_ca_and_client_certificate_through_ssl_context(tls_node: TLSNode) -> None:
    with trio.fail_after(MUST_HAPPEN):
        async with connect(tls_node.url(), ssl_context=tls_node.context()) as conn:
            assert isinstance(conn._stream, trio.SSLStream)
            assert conn.server_properties["product"] == "RabbitMQ"
            async with conn.channel() as channel:
                ok = await channel.queue_declare("", exclusive=True)
                await channel.confirm_select()
                await channel.basic_publish(b"over tls", routing_key=ok.queue)
                delivery = await channel.basic_get(ok.queue, no_ack=True)
                assert delivery is not None and delivery.body == b"over tls"


async def test_an_app_connects_with_its_ssl_context_and_per_connection_ones(
    tls_node: TLSNode,
) -> None:
    app = App(tls_node.url(), name="tls", ssl_context=tls_node.context())
    app.amqp.add_connection("other", tls_node.url(), ssl_context=tls_node.context())

    @app.amqp.consume("tw-tls-default", declare=True)
    async def default(messages: list[object]) -> None: ...

    @app.amqp.consume("tw-tls-other", declare=True, connection="other")
    async def other(messages: list[object]) -> None: ...

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            while not all(sup.up for sup in app.amqp.supervisors):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert {sup.name for sup in app.amqp.supervisors} == {"default", "other"}
        for sup in app.amqp.supervisors:
            assert sup.connection is not None
            assert isinstance(sup.connection._stream, trio.SSLStream)


async def test_no_ca_is_a_verification_error_at_once(tls_node: TLSNode) -> None:
    start = trio.current_time()
    with trio.fail_after(MUST_HAPPEN), pytest.raises(TLSVerificationError) as info:
        async with connect(tls_node.url()):  # the system CAs do not know ours
            pytest.fail("an unknown CA was trusted")
    assert info.value.host == "localhost"
    assert "certificate verification failed for localhost" in str(info.value)
    assert trio.current_time() - start < 5  # no retry loop


async def test_mutual_tls_without_a_client_certificate_fails_clearly(tls_node: TLSNode) -> None:
    with trio.fail_after(MUST_HAPPEN), pytest.raises(TLSCertificateRequiredError) as info:
        async with connect(tls_node.url(), ssl_context=tls_node.context(client_cert=False)):
            pytest.fail("connected without the client certificate the broker requires")
    assert "client certificate" in str(info.value)
    assert "load_cert_chain" in str(info.value)


async def test_hostname_mismatch_is_a_verification_error(tls_node: TLSNode) -> None:
    with trio.fail_after(MUST_HAPPEN), pytest.raises(TLSVerificationError) as info:
        async with connect(tls_node.url("127.0.0.1"), ssl_context=tls_node.context()):
            pytest.fail("a certificate for localhost was accepted for 127.0.0.1")
    assert info.value.host == "127.0.0.1"
    assert "not valid for that name" in str(info.value)


async def test_plaintext_to_the_tls_listener_says_use_amqps(tls_node: TLSNode) -> None:
    url = tls_node.url().replace("amqps://", "amqp://", 1)
    with trio.fail_after(MUST_HAPPEN), pytest.raises(ConnectError) as info:
        async with connect(url):
            pytest.fail("a plaintext handshake succeeded on the TLS port")
    assert "this port speaks TLS: use amqps://" in str(info.value)
