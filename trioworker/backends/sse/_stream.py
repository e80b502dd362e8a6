"""One SSE stream: a reconnecting httpx reader feeding a :class:`~trioworker.Batcher`.

Shape::

    StreamRun.run
      ├── read loop: GET (Accept: text/event-stream, Last-Event-ID) ─ bytes ─▶ EventParser
      │     └── events ─▶ Batcher.put          (reconnects with retry / backoff + jitter)
      └── Batcher.run ─ bulk ─▶ handler        (lives across reconnects)

The batcher outlives the connections on purpose: a drop does not touch events already
read, so nothing is lost or handed twice — the reconnect asks the server to resume after
the last event ID the parser dispatched.

An SSE server cannot take an event back, so there is no "requeue": a handler that raises is
logged, the optional ``on_exception`` hook gets the events, and the stream goes on.

Only what the network and the server can do wrong is reconnected: transport and HTTP errors
(httpx), a response that is not an event stream (:class:`BadResponse`), an invalid stream
(:class:`~trioworker.sse.SSEProtocolError`). Any other exception in the read loop is a bug
in our code; it propagates, so the stream's task (and the app) crash where it is seen,
instead of a reconnect loop logging it forever.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ...pipeline._backoff import backoff_delay
from ...pipeline._batcher import Batcher, BatcherStats
from ...pipeline._handlers import Handler, adapt
from ...pipeline._pools import Pool
from ...sse._event import Event
from ...sse._parser import EventParser, SSEProtocolError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("trioworker.sse")

#: ``async def on_exception(events, exc)`` (or a plain ``def``, run in a thread).
ErrorHook = Callable[[list[Event], BaseException], Any]

#: First reconnection delay after a failure; it doubles per failure up to the cap.
BACKOFF_BASE = 0.1


class BadResponse(Exception):
    """The server answered, but not with an event stream (status or content type)."""


class StreamStats:
    """A stream's counters, read by the metrics collector at scrape time.

    They live on the registration (:class:`SSEStream`), not on a run, so they count for the
    process's life: Prometheus counters must only go up, and serving the same app a second
    time continues them. Plain ints, bumped once per chunk or bulk, never per scrape.
    """

    __slots__ = ("batcher", "dropped", "failed", "handled", "received", "reconnects")

    def __init__(self) -> None:
        #: Events parsed from the stream and handed to the batcher.
        self.received = 0
        #: Events whose handler call finished, successfully or not.
        self.handled = 0
        #: Events in handler calls that raised or timed out (not retried).
        self.failed = 0
        #: Events never handed to the handler: the grace period ran out at stop.
        self.dropped = 0
        #: Reconnects scheduled: the stream failed or the server ended it.
        self.reconnects = 0
        #: Bulk sizes, handler durations and calls in progress.
        self.batcher = BatcherStats()


@dataclasses.dataclass(eq=False)
class SSEStream:
    """A registered ``@app.sse.consume`` stream: its configuration, and its counters."""

    url: str
    handler: Handler
    bulk_size: int
    flush_interval: float
    headers: dict[str, str]
    timeout: float | None
    concurrency: int
    on_exception: ErrorHook | None
    read_timeout: float | None
    connect_timeout: float
    max_line_length: int
    max_event_size: int
    max_reconnect_delay: float
    name: str
    #: The named pool (``app.pool()``) the handler runs in, if any (docs/pools.md).
    runner: Pool | None = None
    stats: StreamStats = dataclasses.field(default_factory=StreamStats, repr=False)


def _describe(events: list[Event]) -> str:
    first, last = events[0].id, events[-1].id
    if not first and not last:
        return f"{len(events)} events (no ids)"
    return f"{len(events)} events (ids {first!r}..{last!r})"


class StreamRun:
    """One stream running for as long as its backend runs (across reconnects)."""

    def __init__(
        self, stream: SSEStream, client: httpx.AsyncClient, *, last_event_id: str = ""
    ) -> None:
        self.stream = stream
        self.client = client
        #: True while a response is being read (health).
        self.connected = False
        #: The server answered 204 No Content: the stream is over, per the SSE spec.
        self.finished = False
        #: Why the last connection attempt failed (health, logs).
        self.last_error = ""
        #: Sent as ``Last-Event-ID`` on every reconnect.
        self.last_event_id = last_event_id
        #: The server's ``retry`` (ms), once it sent one.
        self.retry: int | None = None
        self.stats = stream.stats
        self._call: Callable[..., Awaitable[Any]] = adapt(
            stream.handler, timeout=stream.timeout, pool=stream.runner
        )
        self._on_exception = adapt(stream.on_exception) if stream.on_exception is not None else None
        self.batcher: Batcher[Event] = Batcher(
            self._handle,
            bulk_size=stream.bulk_size,
            flush_interval=stream.flush_interval,
            concurrency=stream.concurrency,
            on_done=self._on_done,
            on_unhandled=self._on_unhandled,
            stats=stream.stats.batcher,
        )
        # Reading pauses (the socket is not read, so TCP pushes back on the server) while
        # this many events wait for a handler: one bulk per slot plus one ready to go.
        self.max_buffered = stream.bulk_size * (stream.concurrency + 1)
        self._room = trio.Event()
        self._leftover: list[Event] = []
        self._cancelled: list[Event] = []
        self._read_scope = trio.CancelScope()
        self._drain_scope = trio.CancelScope()
        self.stopping = False
        self._got_bytes = False

    # ------------------------------------------------------------ handling

    async def _handle(self, events: list[Event]) -> None:
        # A bulk was just taken from the batcher's buffer: the reader may have room again.
        self._room.set()
        self._room = trio.Event()
        try:
            await self._call(events)
        except Exception as exc:
            self.stats.failed += len(events)
            log.error(
                "SSE stream %r: handler failed on %s: %r; these events are not retried "
                "(an SSE server cannot take them back)",
                self.stream.name,
                _describe(events),
                exc,
                exc_info=exc,
            )
            if self._on_exception is not None:
                try:
                    await self._on_exception(events, exc)
                except Exception:
                    log.exception("SSE stream %r: the on_exception hook failed", self.stream.name)

    def _on_done(self, bulk: list[Event], error: BaseException | None) -> None:
        # _handle never raises an Exception: failures were logged (and hooked) there.
        self.stats.handled += len(bulk)

    def _on_unhandled(self, bulk: list[Event]) -> None:
        if self._drain_scope.cancel_called:
            # A handler call cancelled past the grace period: these came before anything
            # still buffered, and are dropped (reported by run()).
            self._cancelled.extend(bulk)
        else:
            # Buffered when the batcher closed: flushed to the handler by run().
            self._leftover.extend(bulk)

    # ------------------------------------------------------------- running

    async def run(self) -> None:
        """Read (and reconnect) until :meth:`stop` or a 204; then drain the handlers."""
        try:
            with self._drain_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.batcher.run)
                    with self._read_scope:
                        await self._read_loop()
                    self.batcher.close()
                # Every handler call has returned; the events that were still buffered are
                # handed over too, in order, rather than dropped.
                await self._flush_leftover()
        finally:
            self.connected = False
            dropped = self._cancelled + self._leftover
            if dropped:
                self.stats.dropped += len(dropped)
                log.warning(
                    "SSE stream %r: %s not handled: the grace period ran out",
                    self.stream.name,
                    _describe(dropped),
                )
                self._cancelled = []
                self._leftover = []

    async def _flush_leftover(self) -> None:
        size = self.stream.bulk_size
        while self._leftover:
            bulk = self._leftover[:size]
            await self._handle(bulk)
            # Removed only once handled: a call cancelled by the grace period keeps its
            # events in the list, so they are reported as dropped.
            del self._leftover[:size]
            self.stats.handled += len(bulk)

    def stop(self, grace_period: float) -> None:
        """Stop reading now; running and buffered handler calls get ``grace_period`` s."""
        self.stopping = True
        self._read_scope.cancel()
        deadline = trio.current_time() + grace_period
        self._drain_scope.deadline = min(self._drain_scope.deadline, deadline)

    async def _read_loop(self) -> None:
        import httpx  # with the first stream that runs: apps without SSE never load it

        stream = self.stream
        attempt = 0
        while True:
            self._got_bytes = False
            failed = True
            try:
                await self._read_once()
            except SSEProtocolError as exc:
                self._fail(f"invalid event stream: {exc}; reconnecting")
            except BadResponse as exc:
                self._fail(str(exc))
            except (httpx.HTTPError, OSError) as exc:
                # Transport errors (refused, reset, timed out, TLS), HTTP errors and a body
                # that fails to decode. Anything else raised here is a bug of ours (or of a
                # library): it propagates and crashes the stream's task, rather than turning
                # into a reconnect loop that logs the same traceback forever.
                if self._got_bytes:
                    failed = False
                    self.last_error = f"connection lost: {exc!r}"
                    log.warning("SSE stream %r: connection lost: %r", stream.name, exc)
                else:
                    self._fail(f"cannot read the stream: {exc!r}")
            else:
                if self.finished:
                    return
                if self._got_bytes:
                    failed = False
                    self.last_error = "the server ended the stream"
                    log.info("SSE stream %r: the server ended the stream", stream.name)
                else:
                    self._fail("the server ended the stream without sending anything")
            finally:
                self.connected = False
            # A stream that worked for a while (sent something) starts the backoff over;
            # one that fails at once (refused, 500, garbage) backs off further each time.
            attempt = attempt + 1 if failed else 0
            delay = self._delay(attempt - 1 if failed else 0, failed=failed)
            self.stats.reconnects += 1
            log.info(
                "SSE stream %r: reconnecting in %.2f s (Last-Event-ID %r)",
                stream.name,
                delay,
                self.last_event_id,
            )
            await trio.sleep(delay)

    def _fail(self, why: str) -> None:
        self.last_error = why
        log.error("SSE stream %r: %s", self.stream.name, why)

    def _delay(self, attempt: int, *, failed: bool) -> float:
        """The wait before the next attempt.

        After a working stream dropped, the server's ``retry`` if it sent one (that is what
        the field is for). After a failure, exponential backoff with jitter — but never
        less than the server's ``retry``, and never more than ``max_reconnect_delay``.
        """
        cap = self.stream.max_reconnect_delay
        retry = math.inf if self.retry is None else self.retry / 1000
        if not failed and self.retry is not None:
            return min(retry, cap)
        backoff = backoff_delay(attempt, base=BACKOFF_BASE, cap=cap)
        if self.retry is None:
            return backoff
        return min(max(retry, backoff), cap)

    async def _read_once(self) -> None:
        """One connection, until the server ends it (raises on failures)."""
        stream = self.stream
        headers = {
            **stream.headers,
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        import httpx

        timeout = httpx.Timeout(
            stream.connect_timeout,
            read=stream.read_timeout,
            connect=stream.connect_timeout,
        )
        async with self.client.stream("GET", stream.url, headers=headers, timeout=timeout) as resp:
            if resp.status_code == 204:
                self.finished = True
                log.warning(
                    "SSE stream %r: the server answered 204 No Content: the stream is over "
                    "and is not reconnected",
                    stream.name,
                )
                return
            if resp.status_code != 200:
                raise BadResponse(f"the server answered HTTP {resp.status_code}, not 200")
            content_type = resp.headers.get("content-type", "")
            if content_type.split(";", 1)[0].strip().lower() != "text/event-stream":
                raise BadResponse(
                    f"the server answered with content type {content_type!r}, not text/event-stream"
                )
            self.connected = True
            self.last_error = ""
            log.info("SSE stream %r: connected", stream.name)
            parser = EventParser(
                last_event_id=self.last_event_id,
                max_line_length=stream.max_line_length,
                max_event_size=stream.max_event_size,
            )
            put = self.batcher.put
            stats = self.stats
            try:
                async for chunk in resp.aiter_bytes():
                    self._got_bytes = True
                    parser.feed(chunk)
                    # Every event of the chunk goes to the batcher without awaiting, so a
                    # stop never strands parsed events; the pause for room comes between
                    # chunks.
                    parsed = 0
                    while (event := parser.next_event()) is not None:
                        put(event)
                        parsed += 1
                    stats.received += parsed
                    self.last_event_id = parser.last_event_id
                    if parser.retry is not None:
                        self.retry = parser.retry
                    await self._wait_for_room()
            finally:
                self.last_event_id = parser.last_event_id
                if parser.retry is not None:
                    self.retry = parser.retry

    async def _wait_for_room(self) -> None:
        batcher = self.batcher
        while batcher.buffered >= self.max_buffered and not batcher.closed:
            await self._room.wait()
