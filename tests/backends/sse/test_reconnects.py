"""What a stream reconnects on, and when: the server's ``retry`` after a stream that worked,
and no reconnect at all for a bug in our own code.

These run the SSE backend on its own, through the backend contract, against the real test
server: no app and no broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from trioworker import Event
from trioworker.backends.sse import SSEBackend, _stream
from trioworker.metrics import Metrics
from trioworker.pipeline import Backend, Health
from trioworker.pipeline._batcher import Batcher

from ._server import Reply, SSEServer
from .conftest import MUST_HAPPEN, Bulks


class Services:
    """The :class:`~trioworker.pipeline.AppServices` an SSE backend needs, without an app."""

    name = "sse-tests"
    grace_period = 2.0
    shutting_down = False

    def __init__(self) -> None:
        self.metrics = Metrics()

    def start_backend(self, backend: Backend) -> bool:
        return False  # the test runs the backend itself

    def health(self) -> dict[str, Health]:
        return {}


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


@asynccontextmanager
async def running(backend: SSEBackend) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run)
        try:
            yield
        finally:
            backend.stop()


@pytest.mark.parametrize("then", ["end", "abort"])
async def test_the_server_retry_is_honoured_after_a_working_stream(
    sse_server: SSEServer, bulks: Bulks, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    # A default backoff far from the server's retry (2.5-5 s after a working stream, and at
    # least that after a failure), so that waiting the one cannot pass for the other.
    monkeypatch.setattr(_stream, "BACKOFF_BASE", 5.0)
    sse_server.log.extend(["a", "b", "c"])
    # The stream works (two events), then the server ends it, or the connection drops.
    body = b"retry: 300\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    sse_server.replies.append(Reply(body=body, then=then))  # type: ignore[arg-type]
    backend = SSEBackend(Services())

    @backend.consume(sse_server.url, flush_interval=0)
    async def handle(events: list[Event]) -> None:
        bulks.add(events)

    async with running(backend):
        await bulks.wait_for(3)
    first, second = sse_server.requests[:2]
    assert second.headers["last-event-id"] == "2"
    assert 0.28 <= second.time - first.time <= 2.0
    assert bulks.data == ["a", "b", "c"]


async def test_a_bug_in_our_code_crashes_the_stream_instead_of_reconnecting(
    sse_server: SSEServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sse_server.publish("a", "b")

    def put(self: Batcher[Event], item: Event) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(Batcher, "put", put)  # called once per event the stream reads
    backend = SSEBackend(Services())

    @backend.consume(sse_server.url)
    async def handle(events: list[Event]) -> None:
        raise AssertionError("no event can reach the handler")

    crash: BaseExceptionGroup[RuntimeError] | None = None
    with trio.move_on_after(MUST_HAPPEN) as waited:
        try:
            async with running(backend):
                await trio.sleep_forever()
        except* RuntimeError as group:
            crash = group
    assert not waited.cancelled_caught, "the bug was turned into reconnects"
    assert crash is not None
    assert [str(e) for e in leaves(crash)] == ["injected bug"]
    assert len(sse_server.requests) == 1  # never reconnected
