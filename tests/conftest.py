"""Suite-wide fixtures: broker location, unique names, queue cleanup, broker preflight.

Broker tests never skip: if RabbitMQ is not answering, the run fails before any test starts
(docs/architecture.md, "Promises and how they are tested": integration tests talk to a
real RabbitMQ).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit

import pytest

from tests.support import rabbitmqctl

# The framework suites' shared fixtures (``broker``, ``make_app``, ``broker_host_port``).
pytest_plugins = ["tests.support.broker"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
AMQP_URL_ENV = "TRIOWORKER_TEST_AMQP_URL"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
PREFLIGHT_TIMEOUT = 5.0


def configured_amqp_url() -> str:
    return os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL


def broker_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default_port = 5671 if parts.scheme == "amqps" else 5672
    return parts.hostname or "127.0.0.1", parts.port or default_port


def probe_broker(host: str, port: int, timeout: float = PREFLIGHT_TIMEOUT) -> str | None:
    """Return None if an AMQP 0-9-1 broker answers the protocol header, else why not.

    A bare TCP connect is not enough: something else could own the port. RabbitMQ answers the
    header with a Connection.Start method frame (type byte 0x01).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(PROTOCOL_HEADER)
            first = sock.recv(1)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if first != b"\x01":
        return f"port answered {first!r}, not an AMQP method frame (0x01)"
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Preflight: fail the whole run loudly if a selected test needs the broker and it's down.

    Runs once per session after deselection (-m/-k), so unit-only runs don't need RabbitMQ.
    """
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("broker") for item in session.items):
        return
    url = configured_amqp_url()
    host, port = broker_address(url)
    problem = probe_broker(host, port)
    if problem is not None:
        pytest.exit(
            f"RabbitMQ is not answering on {host}:{port} ({problem}).\n"
            f"Tests marked 'broker' need a real broker; they are never skipped.\n"
            f"Start it with: scripts/ensure-rabbitmq.sh"
            f"  (or point {AMQP_URL_ENV} at a running broker)",
            returncode=1,
        )


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of the test broker; override with TRIOWORKER_TEST_AMQP_URL."""
    return configured_amqp_url()


@pytest.fixture(scope="session")
def amqp_vhost(amqp_url: str) -> str:
    """The vhost of ``amqp_url``, decoded ("%2F" -> "/"), for rabbitmqctl ``-p``."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _shorten(text: str, limit: int) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")
    return cleaned[:limit].rstrip("_") or "test"


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory for per-test resource names: ``tw-test-<prefix>-<test>-<hex>``.

    Unique per call, and traceable to the test that leaked it if cleanup ever fails.
    """
    test_part = _shorten(request.node.name.removeprefix("test_"), 40)

    def make(prefix: str = "q") -> str:
        return f"tw-test-{_shorten(prefix, 20)}-{test_part}-{secrets.token_hex(4)}"

    return make


class QueueCleanup:
    """Collects queue names; the ``cleanup_queues`` fixture deletes them at teardown."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.names: list[str] = []

    def add(self, name: str) -> str:
        """Register ``name`` for deletion; returns it so it can wrap the name's creation."""
        if name not in self.names:
            self.names.append(name)
        return name

    def delete_all(self) -> dict[str, bool]:
        """Delete registered queues now (missing ones are fine); {name: existed}."""
        names, self.names = self.names, []
        return rabbitmqctl.delete_queues(names, self.vhost) if names else {}


@pytest.fixture
def cleanup_queues(amqp_vhost: str) -> Iterator[QueueCleanup]:
    """``cleanup_queues.add(name)``; at teardown each is deleted via rabbitmqctl (tolerant of
    queues that are already gone). Deletions run concurrently, ~1 s total."""
    cleanup = QueueCleanup(amqp_vhost)
    yield cleanup
    cleanup.delete_all()
