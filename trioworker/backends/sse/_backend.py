"""``app.sse``: register streams; run them with one httpx client; stop them gracefully."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from prometheus_client.metrics_core import Metric

from ... import _settings
from ..._log_context import log_context
from ...pipeline._backend import Health, slow_call
from ...pipeline._handlers import Handler
from ...sse._parser import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_LENGTH
from ._metrics import sse_families
from ._stream import ErrorHook, SSEStream, StreamRun

if TYPE_CHECKING:
    import httpx

    from ...pipeline import AppServices

__all__ = ["SSEBackend"]


def _safe_name(url: str) -> str:
    """The URL without credentials or query (tokens often travel there): for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class SSEBackend:
    """``app.sse``: consume Server-Sent Event streams into batched handlers.

    Active once a stream is registered. Every stream has its own reconnecting reader and
    batcher; all share one ``httpx.AsyncClient`` (one connection pool), closed at stop.
    """

    name = "sse"

    def __init__(self, app: AppServices) -> None:
        self.app = app
        self.streams: list[SSEStream] = []
        self.runs: list[StreamRun] = []
        # Where each stream stopped, so serving the same app again resumes there.
        self._last_event_ids: dict[int, str] = {}
        self._client: httpx.AsyncClient | None = None
        #: The httpx transport the streams are read through (None: the network). Set it
        #: before the app starts; ``trioworker.testing`` serves feeds in-process with it.
        self.transport: httpx.AsyncBaseTransport | None = None
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._stop_event = trio.Event()

    def consume(
        self,
        url: str,
        *,
        bulk_size: int = 1,
        flush_interval: float | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        concurrency: int = 1,
        on_exception: ErrorHook | None = None,
        read_timeout: float | None = None,
        connect_timeout: float = 10.0,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_reconnect_delay: float = 30.0,
        name: str | None = None,
        pool: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for the event stream at ``url``; it receives ``list[Event]``.

        ``timeout`` bounds one handler call (as for AMQP routes); ``read_timeout`` is how
        long the stream may stay silent before it counts as dead and is reconnected (set it
        above the server's keep-alive interval; ``None`` waits forever). A handler that
        raises is logged and ``on_exception(events, exc)`` is called; the events are not
        retried. ``pool=`` runs a plain ``def`` handler in a named pool (in a process pool
        the events travel: docs/pools.md). See docs/sse.md for every option. The handler is
        returned unchanged.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an SSE stream needs an http(s) URL, got {url!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if read_timeout is not None and read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        if connect_timeout <= 0 or max_reconnect_delay <= 0 or math.isnan(max_reconnect_delay):
            raise ValueError("connect_timeout and max_reconnect_delay must be positive")
        if bulk_size < 1 or concurrency < 1:
            raise ValueError("bulk_size and concurrency must be at least 1")
        if max_line_length < 1 or max_event_size < 1:
            raise ValueError("max_line_length and max_event_size must be at least 1")
        interval = _settings.flush_interval() if flush_interval is None else flush_interval
        if interval < 0 or math.isnan(interval):
            raise ValueError("flush_interval must be >= 0")

        def register(handler: Handler) -> Handler:
            stream_name = name or _safe_name(url)
            runner = None if pool is None else self.app.pools.get(pool)
            if runner is not None:
                runner.check_handler(handler, f"SSE stream {stream_name!r}")
            stream = SSEStream(
                url=url,
                handler=handler,
                bulk_size=bulk_size,
                flush_interval=interval,
                headers=dict(headers or {}),
                timeout=timeout,
                concurrency=concurrency,
                on_exception=on_exception,
                read_timeout=read_timeout,
                connect_timeout=connect_timeout,
                max_line_length=max_line_length,
                max_event_size=max_event_size,
                max_reconnect_delay=max_reconnect_delay,
                name=stream_name,
                runner=runner,
            )
            self.streams.append(stream)
            if self._nursery is not None:
                self._start(stream)
            else:
                # The first stream of a running app: the app starts this backend now.
                self.app.start_backend(self)
            return handler

        return register

    def _start(self, stream: SSEStream) -> None:
        assert self._nursery is not None and self._client is not None
        run = StreamRun(
            stream, self._client, last_event_id=self._last_event_ids.get(id(stream), "")
        )
        self.runs.append(run)
        with log_context(app=self.app.name, route=stream.name):  # whichever task calls this
            self._nursery.start_soon(run.run)

    # ----------------------------------------------------------- lifecycle

    @property
    def active(self) -> bool:
        """True once at least one stream is registered."""
        return bool(self.streams)

    def collect(self) -> Iterator[Metric]:
        """This backend's metric families, for ``app.metrics`` (a :data:`MetricsSource`)."""
        return sse_families(self.streams, self.runs)

    def health(self) -> Health:
        """Healthy when every stream is connected (a stream the server ended with 204
        counts as done, not broken); the detail names the ones reconnecting. Degraded while
        a handler call runs past the stream's ``timeout`` or, without one, the app's
        ``slow_handler_threshold``."""
        problems: list[str] = []
        slow: list[str] = []
        notes: list[str] = []
        threshold = self.app.slow_handler_threshold
        for run in self.runs:
            running = run.batcher.longest_running_call()
            note = slow_call(run.stream.name, running, run.stream.timeout, threshold)
            if note:
                slow.append(note)
            if run.finished:
                notes.append(f"stream {run.stream.name!r} was ended by the server (204)")
            elif not run.connected and not run.stopping:
                why = f": {run.last_error}" if run.last_error else ""
                problems.append(f"stream {run.stream.name!r} is reconnecting{why}")
        detail = "; ".join(problems + slow + notes)
        return Health(not problems, detail, degraded=bool(slow))

    def handlers(self) -> list[tuple[str, Handler]]:
        """``(stream name, handler)`` of every stream, for the blocked-loop watchdog."""
        return [(stream.name, stream.handler) for stream in self.streams]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every stream until :meth:`stop` has drained them all, then close the client."""
        if self._running or self.app.shutting_down:
            # Started by a registration that raced with the app's shutdown: nothing to do.
            task_status.started()
            return
        self._running = True
        import httpx  # loaded when a stream runs: apps without SSE routes never pay for it

        try:
            # The client is closed only after every stream's nursery task has returned.
            async with (
                httpx.AsyncClient(follow_redirects=True, transport=self.transport) as client,
                trio.open_nursery() as nursery,
            ):
                self._client = client
                self._nursery = nursery
                for stream in self.streams:
                    self._start(stream)
                task_status.started()
                # Streams ended by a 204 return early; the backend itself lives until
                # stop(), so streams registered later still have a home.
                await self._stop_event.wait()
        finally:
            for run in self.runs:
                self._last_event_ids[id(run.stream)] = run.last_event_id
            self._running = False
            self._nursery = None
            self._client = None
            self._stop_event = trio.Event()
            self.runs = []

    def stop(self) -> None:
        """Stop reading every stream; running handlers and buffered events get
        ``app.grace_period`` seconds (see :meth:`StreamRun.stop`). Idempotent."""
        if not self._running:
            return
        self._nursery = None  # a stream registered from now on is not started
        self._stop_event.set()
        for run in self.runs:
            run.stop(self.app.grace_period)
