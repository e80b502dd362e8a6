"""The application: routes, hooks, shared state, and one nursery that owns everything."""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any

import trio

from . import _settings
from ._errors import StartupError
from ._lifecycle import leaves_of, run_started_hooks, watch_signals
from ._log_context import bind
from ._watchdog import BlockedLoopWatchdog, listings
from .backends.amqp._backend import AMQPBackend
from .backends.http._backend import HTTPBackend
from .backends.nameko import NamekoService
from .backends.sse._backend import SSEBackend
from .backends.timers import TimerBackend
from .metrics._collector import Metrics
from .pipeline._backend import Backend, Health
from .pipeline._handlers import Handler
from .pipeline._pools import Pools

log = logging.getLogger("trioworker")

Hook = Callable[["App"], Awaitable[None]]


class App(MutableMapping[str, Any]):
    """A worker application.

    ``App`` is also a mapping: put shared state (clients, pools, caches) in it from a
    startup hook and read it from handlers — ``app["db"] = ...``.

    Arguments:
        amqp_url: the broker: a URL, or the URLs of one cluster's nodes (a list, or
            comma-separated) to fail over between (docs/cluster.md); default
            ``$TRIOWORKER_AMQP_URL`` (comma-separated) or the local RabbitMQ.
        amqp_shuffle: try the nodes in a random order, to spread many workers over them
            (``$TRIOWORKER_AMQP_SHUFFLE``, default off: in the order given).
        prefetch: default per-consumer prefetch of AMQP routes (``$TRIOWORKER_PREFETCH``,
            default 1024). A route's bulk size is at most its prefetch.
        grace_period: seconds running handlers get to finish at shutdown
            (``$TRIOWORKER_GRACE_PERIOD``, default 30).
        name: shown in RabbitMQ's connection list; default: the script's name.
        http_host, http_port: where ``app.http`` listens (``$TRIOWORKER_HTTP_HOST`` /
            ``$TRIOWORKER_HTTP_PORT``, default 127.0.0.1:8080; 0 picks a free port). Giving
            a port turns the HTTP server on even without routes (docs/http.md).
        health_path, metrics_path: the built-in endpoints; None turns one off.
        ssl_context: the TLS context of the broker connection (``amqps://``): a private
            CA, a client certificate (mutual TLS). Default: the system CAs.
        blocked_loop_threshold, slow_handler_threshold: seconds the event loop may be
            blocked, and a handler call may run (routes without ``timeout``), before a
            warning / a degraded ``/health``; default 1 and 60 (env too); 0 turns one off.
    """

    def __init__(
        self,
        amqp_url: str | Sequence[str] | None = None,
        *,
        amqp_shuffle: bool | None = None,
        prefetch: int | None = None,
        grace_period: float | None = None,
        name: str | None = None,
        http_host: str | None = None,
        http_port: int | None = None,
        health_path: str | None = "/health",
        metrics_path: str | None = "/metrics",
        ssl_context: ssl.SSLContext | None = None,
        blocked_loop_threshold: float | None = None,
        slow_handler_threshold: float | None = None,
    ) -> None:
        urls, source = _settings.amqp_urls(amqp_url)
        self.name = name or os.path.basename(sys.argv[0] or "trioworker") or "trioworker"
        self.grace_period = _settings.grace_period() if grace_period is None else grace_period
        self.amqp = AMQPBackend(
            self,
            urls,
            _settings.prefetch() if prefetch is None else prefetch,
            ssl_context=ssl_context,
            shuffle=_settings.amqp_shuffle() if amqp_shuffle is None else amqp_shuffle,
            url_source=source,  # a bad URL fails here, naming which and where from
        )
        self.nameko = NamekoService(self, self.amqp)  # Nameko events and RPC, on app.amqp
        self.http = HTTPBackend(
            self, host=http_host, port=http_port, health_path=health_path, metrics_path=metrics_path
        )
        self._state: dict[str, Any] = {}
        self._on_startup: list[Hook] = []
        self._on_shutdown: list[Hook] = []
        self._on_started: list[Hook] = []
        self._shutdown_requested: trio.Event | None = None
        self._exit_code = 0
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._running = False
        self._extra_backends: list[Backend] = []
        self._started: list[Backend] = []
        self._backends_nursery: trio.Nursery | None = None
        self._backend_done: dict[int, tuple[Backend, trio.Event]] = {}
        self.timers = TimerBackend(self)
        self.add_backend(self.timers)
        self.add_backend(self.http)
        self.sse = SSEBackend(self)
        self.add_backend(self.sse)
        # Each backend that counts registers a source; sources are read at every scrape.
        self.metrics = Metrics()
        self.metrics.add_source(self.amqp.collect)
        self.metrics.add_source(self.sse.collect)
        self.pools = Pools()  # process pools open with serve(), see docs/pools.md
        self.pool = self.pools.declare  # app.pool("cpu", kind="process", size=2)
        self.metrics.add_source(self.pools.collect)
        self.slow_handler_threshold = _settings.slow_handler_threshold(slow_handler_threshold)
        self.watchdog = BlockedLoopWatchdog(self, blocked_loop_threshold)  # None: from env
        self.metrics.add_source(self.watchdog.collect)

    # ------------------------------------------------------------- mapping

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __repr__(self) -> str:
        return f"<App {self.name!r} routes={len(self.amqp.routes)} running={self._running}>"

    # --------------------------------------------------------------- hooks

    def on_startup(self, hook: Hook) -> Hook:
        """Register ``async def hook(app)`` to run before any backend starts."""
        self._on_startup.append(hook)
        return hook

    def on_started(self, hook: Hook) -> Hook:
        """Register ``async def hook(app)`` to run once every backend is up: the broker
        connected and every route consuming its queues. Publishing works here.

        One failing stops the app gracefully and ``serve()`` raises :class:`StartupError`
        (docs/amqp.md, "Lifecycle hooks").
        """
        self._on_started.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Register ``async def hook(app)`` to run after every backend stopped."""
        self._on_shutdown.append(hook)
        return hook

    # -------------------------------------------------------------- timers

    def every(
        self,
        seconds: float,
        *,
        run_at_startup: bool = False,
        max_concurrency: int = 1,
        timeout: float | None = None,
        name: str | None = None,
        pool: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Run ``handler(app)`` every ``seconds`` on a fixed schedule (docs/timers.md);
        ``pool=``: in that named pool (in a process pool, ``handler()``: docs/pools.md).

        Ticks that come while ``max_concurrency`` runs are still going are skipped and
        counted; an exception is logged and the timer goes on. Registered on a running app,
        the timer starts at once.
        """
        return self.timers.every(
            seconds,
            run_at_startup=run_at_startup,
            max_concurrency=max_concurrency,
            timeout=timeout,
            name=name,
            pool=pool,
        )

    # ----------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """True between startup and the end of shutdown."""
        return self._running

    @property
    def trio_token(self) -> trio.lowlevel.TrioToken | None:
        """The trio run serving the app, while it runs: how other threads reach it."""
        return self._trio_token if self._running else None

    @property
    def exit_code(self) -> int:
        """The exit status the app asked for with ``shutdown(exit_code=)`` during its last
        run (0 if none): what ``trioworker run`` exits with after a graceful stop."""
        return self._exit_code

    def shutdown(self, exit_code: int = 0) -> None:
        """Ask for a graceful stop. Safe from a handler, a task, a thread or a signal handler.

        Returns at once; :meth:`serve` returns (or ``open_app`` leaves) once in-flight work
        has drained.

        ``exit_code`` is for a job that ends by itself and failed (the work was not done):
        ``trioworker run`` exits with it once the stop has drained, so a process manager or
        a CI step sees the failure. The first non-zero one asked for wins; a signal or a
        plain ``shutdown()`` does not reset it.
        """
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise TypeError(f"shutdown(exit_code={exit_code!r}): an int")
        if not 0 <= exit_code <= 255:
            raise ValueError(f"shutdown(exit_code={exit_code}): between 0 and 255")
        if exit_code and not self._exit_code and self._running:
            self._exit_code = exit_code
        event = self._shutdown_requested
        if event is None:
            return
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            # Another thread (a sync handler, a signal handler of a foreign loop).
            if self._trio_token is not None:
                self._trio_token.run_sync_soon(event.set)
            return
        event.set()

    async def serve(
        self,
        *,
        install_signal_handlers: bool | None = None,
        task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the app until SIGINT/SIGTERM or :meth:`shutdown`, then stop gracefully.

        ``trio.run(app.serve)``. Startup: ``on_startup`` hooks in order (one failing raises
        :class:`StartupError` and nothing else starts), then the backends. Shutdown: the
        backends stop (consumers cancelled, buffered messages requeued, running handlers
        given ``grace_period``, decisions sent, channels and connections closed), then the
        ``on_shutdown`` hooks run. A second signal during shutdown cancels what is left.
        """
        if self._running:
            raise RuntimeError("this app is already running")
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        self._shutdown_requested = trio.Event()
        self._exit_code = 0
        self._trio_token = trio.lowlevel.current_trio_token()
        self._running = True
        try:
            # Hooks run before the nursery exists, so a failing one raises StartupError
            # itself (not wrapped in an ExceptionGroup) and nothing else was started.
            for hook in self._on_startup:
                try:
                    await hook(self)
                except Exception as exc:
                    name = getattr(hook, "__qualname__", repr(hook))
                    log.error("startup hook %s failed: %r; the app does not start", name, exc)
                    raise StartupError(f"startup hook {name} failed: {exc!r}") from exc
            started_error: StartupError | None = None
            # Process pools outlive the nursery: handlers in their grace period need them.
            async with self.pools.open(), trio.open_nursery() as nursery:
                if install_signal_handlers:
                    nursery.start_soon(watch_signals, self, nursery.cancel_scope)
                nursery.start_soon(self.watchdog.run)  # docs/logging.md, "A blocked event loop"
                # Each backend's run() returns once stop() has drained it, so leaving this
                # inner nursery means every backend has stopped.
                async with trio.open_nursery() as backends:
                    # start_backend() works from here on: a backend that becomes active
                    # while the others start (a timer's first run publishes) starts too.
                    self._backends_nursery = backends
                    try:
                        for backend in self.backends:
                            if backend.active and backend not in self._started:
                                self._started.append(backend)  # started once only
                                try:
                                    await backends.start(self._run_backend, backend)
                                except BaseException:
                                    self._started.remove(backend)
                                    raise
                    except BaseException:
                        self._backends_nursery = None
                        for backend in self._started:
                            backend.stop()
                        raise
                    started_error = await run_started_hooks(
                        self,
                        self._on_started,
                        self.amqp if self.amqp in self._started else None,
                        self._shutdown_requested,
                    )
                    if started_error is None:
                        log.info("app %r started", self.name)
                        task_status.started(self)
                        await self._shutdown_requested.wait()
                    else:
                        self._shutdown_requested.set()  # a graceful stop, then raise
                    log.info("app %r shutting down", self.name)
                    # Everything stops draining at once, but the AMQP connections stay
                    # open until the other backends are done: an HTTP request, SSE
                    # handler or timer run finishing in its grace period may publish
                    # (and start the AMQP backend for it, see start_backend()).
                    if self.amqp in self._started:  # it runs only if the app uses it
                        self.amqp.stop_consuming()
                    for backend in self.backends:
                        if backend is not self.amqp:
                            backend.stop()
                    for backend, done in list(self._backend_done.values()):
                        if backend is not self.amqp:
                            await done.wait()
                    self._backends_nursery = None
                    if self.amqp in self._started:
                        self.amqp.stop()
                await self._run_shutdown_hooks()
                nursery.cancel_scope.cancel()
            if started_error is not None:
                raise started_error
        except BaseExceptionGroup as group:
            # A backend that cannot start (HTTP port taken) raises StartupError; the user
            # should see that, not two layers of nursery ExceptionGroups around it.
            startup, rest = group.split(StartupError)
            leaves = list(leaves_of(startup)) if startup is not None else []
            if rest is None and len(leaves) == 1:
                raise leaves[0] from leaves[0].__cause__
            raise
        finally:
            self._running = False
            self._shutdown_requested = None
            self._started = []
            self._backends_nursery = None
            self._backend_done = {}

    @property
    def backends(self) -> list[Backend]:
        """Every backend of the app, in start order (stopped all at once)."""
        return [self.amqp, *self._extra_backends]

    def handlers(self) -> list[tuple[str, Callable[..., Any]]]:
        """``(route name, handler)`` of every route, for the blocked-loop watchdog: the
        backends' routes, and Nameko's RPC methods (one route serves them all, the watchdog
        names the method)."""
        return [*listings(self.backends), *self.nameko.handlers()]

    def add_backend(self, backend: Backend) -> None:
        """Run another backend with the app (it starts at once if the app is running)."""
        self._extra_backends.append(backend)
        self.start_backend(backend)

    def start_backend(self, backend: Backend) -> bool:
        """Start ``backend`` now if the app runs and it is not running yet (it became active:
        its first route was registered on a running app). Returns whether the backend runs
        now (False: the app is not running, is shutting down, or the backend is inactive)."""
        if backend in self._started:
            return True
        nursery = self._backends_nursery
        if nursery is None or not backend.active:
            return False
        if self.shutting_down and backend is not self.amqp:
            # Only the AMQP backend may still start while the others drain (a handler
            # publishes for the first time): it is the one stopped after them.
            return False
        self._started.append(backend)
        nursery.start_soon(self._run_backend, backend)
        return True

    def health(self) -> dict[str, Health]:
        """Each running backend's health, by name (``GET /health`` shows it)."""
        return {b.name: b.health() for b in self._started} | self.watchdog.health()

    @property
    def shutting_down(self) -> bool:
        """True once a graceful stop was asked for, until it is over."""
        event = self._shutdown_requested
        return event is not None and event.is_set()

    async def _run_backend(
        self, backend: Backend, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        bind(app=self.name)  # the log context of the backend's task and of its tasks
        done = trio.Event()
        self._backend_done[id(backend)] = (backend, done)
        try:
            await backend.run(task_status=task_status)
        finally:
            done.set()

    async def _run_shutdown_hooks(self) -> None:
        for hook in self._on_shutdown:
            try:
                await hook(self)
            except Exception:
                log.exception("shutdown hook %r failed", hook)
