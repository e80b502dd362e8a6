"""The HTTP backend: ``@app.http.get(...)`` routes and /health, /metrics, served by hypercorn.

The server (hypercorn's trio protocol behind our accept loop, ``_server.py``, which caps
open connections) runs as one task in the app's nursery. Its ``shutdown_trigger`` is an
event set by :meth:`HTTPBackend.stop`: on it the server stops accepting, closes idle
keep-alive connections, and gives in-flight requests ``app.grace_period`` seconds to
finish before cancelling them — the same promise the AMQP backend makes for handlers.

The server runs only when it is wanted (see :attr:`HTTPBackend.active`): a worker that
only consumes AMQP does not grab a port just because HTTP exists.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import trio

from ... import _settings
from ..._errors import StartupError
from ...http._response import Response
from ...http._routing import Router
from ...pipeline._backend import Health
from ...pipeline._handlers import adapt
from ._asgi import ASGIApp
from ._limits import ServerLimits
from ._websocket import DEFAULT_MAX_MESSAGE_SIZE, RPCTargets, WebSocketHandler, WebSocketRoutes

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import Framework

    from ...pipeline import AppServices
    from ...pipeline._pools import Pool
    from ._server import ConnectionLimit

__all__ = ["DEFAULT_MAX_BODY_SIZE", "HTTPBackend"]

log = logging.getLogger("trioworker.http")

H = TypeVar("H", bound=Callable[..., Any])

#: Default ``app.http.max_body_size``: 16 MiB.
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024


def _check_path(path: str | None, what: str) -> str | None:
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise ValueError(f"{what} must start with '/' (or be None to turn it off), got {path!r}")
    return path


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"the HTTP port must be an int from 0 to 65535, got {port!r}")
    return port


def _check_handler(handler: Callable[..., Any]) -> None:
    """Refuse at registration a handler that could not take the request, not per request."""
    if not callable(handler):
        raise TypeError(f"an HTTP handler must be callable, got {handler!r}")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # some builtins have no signature: let the call decide
    try:
        signature.bind(None)
    except TypeError:
        name = getattr(handler, "__qualname__", repr(handler))
        raise TypeError(
            f"HTTP handler {name}{signature} must take one argument, the request"
        ) from None


def _port_of(binds: list[str]) -> int:
    # hypercorn reports what it bound as "http://127.0.0.1:54321" or "http://[::1]:54321".
    return int(binds[0].rsplit(":", 1)[1])


def _find_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_os_error(inner)
            if found is not None:
                return found
    return None


class HTTPBackend(ServerLimits):
    """``app.http``: register routes; serve them, /health and /metrics with hypercorn.

    Arguments (from :class:`App`): ``host`` and ``port`` to listen on
    (``$TRIOWORKER_HTTP_HOST`` / ``$TRIOWORKER_HTTP_PORT``, default 127.0.0.1:8080; port 0
    picks a free port, see :attr:`port`), ``health_path`` and ``metrics_path`` of the
    built-in endpoints (None turns one off). Passing ``port`` or setting the variable turns
    the server on even without routes. ``max_body_size`` (attribute) caps request bodies;
    the server's limits and timeouts (``max_connections``, ``body_timeout``, ...) are
    attributes too (:class:`ServerLimits`).
    """

    name = "http"

    def __init__(
        self,
        app: AppServices,
        *,
        host: str | None = None,
        port: int | None = None,
        health_path: str | None = "/health",
        metrics_path: str | None = "/metrics",
    ) -> None:
        super().__init__()
        env_port = _settings.http_port()
        explicit = port is not None
        self.app = app
        self.host = host or _settings.http_host()
        if port is None:
            port = env_port if env_port is not None else _settings.DEFAULT_HTTP_PORT
        self._port: int = _check_port(port)
        self._enabled = explicit or env_port is not None
        self.health_path = health_path
        self.metrics_path = metrics_path
        self.max_body_size = DEFAULT_MAX_BODY_SIZE
        self.router = Router()
        #: WebSocket routes (``@app.http.websocket``; docs/websocket.md).
        self.websockets = WebSocketRoutes(app)
        self.asgi = ASGIApp(self)
        self._bound_port: int | None = None
        #: False: bind no socket, serve nobody — only :attr:`asgi`, called in-process
        #: (``trioworker.testing.TestClient``'s ``client.http`` does that). Set it before
        #: the app starts.
        self.bind_socket = True
        self._in_process = False
        self._stop_event: trio.Event | None = None
        self._connections: ConnectionLimit | None = None

    def __repr__(self) -> str:
        state = f"serving {self.url}" if self.serving else "not serving"
        return f"<HTTPBackend {state} routes={len(self.router.routes)}>"

    # ------------------------------------------------------------ settings

    @property
    def health_path(self) -> str | None:
        """Path of the built-in health endpoint (default ``/health``); None: off."""
        return self._health_path

    @health_path.setter
    def health_path(self, path: str | None) -> None:
        self._health_path = _check_path(path, "health_path")

    @property
    def metrics_path(self) -> str | None:
        """Path of the built-in Prometheus endpoint (default ``/metrics``); None: off."""
        return self._metrics_path

    @metrics_path.setter
    def metrics_path(self, path: str | None) -> None:
        self._metrics_path = _check_path(path, "metrics_path")

    @property
    def serving(self) -> bool:
        """True while the server listens (from bind until its graceful stop ends)."""
        return self._bound_port is not None

    @property
    def port(self) -> int:
        """The port listened on while serving (the real one when 0 was asked), else the
        configured port."""
        return self._bound_port if self._bound_port is not None else self._port

    @port.setter
    def port(self, port: int) -> None:
        # Unlike App(http_port=...), setting the attribute does not turn the server on: it
        # only says where to listen once something (a route, enable()) does.
        self._port = _check_port(port)

    @property
    def connections(self) -> int:
        """How many connections are open now (at most :attr:`max_connections`)."""
        return self._connections.open if self._connections is not None else 0

    @property
    def url(self) -> str:
        """``http://host:port`` (with the bound port while serving)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def enable(self) -> None:
        """Run the server even without routes (for /health and /metrics)."""
        self._enabled = True
        self.app.start_backend(self)

    # -------------------------------------------------------------- routes

    def route(
        self, path: str, *, methods: Iterable[str], pool: str | None = None
    ) -> Callable[[H], H]:
        """Register ``handler(request)`` for ``methods`` on ``path`` (a template).

        The handler may be ``async def`` or a plain ``def`` (run in a worker thread, or in
        the named *thread* pool ``pool=``; a request cannot travel to a process pool's
        workers, so an async handler awaits ``app.pools.get(name).run(fn, *args)`` with
        picklable arguments instead: docs/pools.md). It
        returns a dict/list (JSON), str (text), bytes, None (204) or a :class:`Response`.
        Registered on a running app, the route is served at once (and the server starts if
        it was not running).
        """
        wanted = frozenset(m.upper() if isinstance(m, str) else m for m in methods)

        def register(handler: H) -> H:
            _check_handler(handler)
            self._check_builtin_clash(path, wanted)
            name = getattr(handler, "__qualname__", repr(handler))
            runner = None if pool is None else self._thread_pool(pool, handler, path)
            self.router.add(wanted, path, adapt(handler, pool=runner), name=name)
            self.app.start_backend(self)
            return handler

        return register

    def get(self, path: str, *, pool: str | None = None) -> Callable[[H], H]:
        """``@app.http.get("/items/{id:int}")``; also answers HEAD (without the body)."""
        return self.route(path, methods=("GET",), pool=pool)

    def post(self, path: str, *, pool: str | None = None) -> Callable[[H], H]:
        return self.route(path, methods=("POST",), pool=pool)

    def put(self, path: str, *, pool: str | None = None) -> Callable[[H], H]:
        return self.route(path, methods=("PUT",), pool=pool)

    def patch(self, path: str, *, pool: str | None = None) -> Callable[[H], H]:
        return self.route(path, methods=("PATCH",), pool=pool)

    def delete(self, path: str, *, pool: str | None = None) -> Callable[[H], H]:
        return self.route(path, methods=("DELETE",), pool=pool)

    def head(self, path: str) -> Callable[[H], H]:
        """An explicit HEAD route (otherwise HEAD is the GET route without the body)."""
        return self.route(path, methods=("HEAD",))

    def websocket(
        self, path: str, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> Callable[[WebSocketHandler], WebSocketHandler]:
        """``@app.http.websocket("/ws/{room}")``: ``async def handler(socket: WebSocket)``;
        a message over ``max_message_size`` bytes closes with 1009. docs/websocket.md."""

        def register(handler: WebSocketHandler) -> WebSocketHandler:
            self.websockets.add(path, handler, max_message_size=max_message_size)
            self.app.start_backend(self)
            return handler

        return register

    def websocket_rpc(self, path: str, functions: RPCTargets, **options: Any) -> None:
        """Expose ``functions`` at ``path`` in micro_framework's WebSocket RPC JSON."""
        self.websockets.add_rpc(path, functions, **options)  # docs/websocket.md
        self.app.start_backend(self)

    def _thread_pool(self, name: str, handler: Callable[..., Any], path: str) -> Pool:
        pool = self.app.pools.get(name)
        if pool.kind == "process":
            raise TypeError(
                f"HTTP route {path}: pool={name!r} is a process pool, and a request (its "
                "body stream, request.app) cannot travel to a worker process; use a thread "
                f"pool, or from an async handler await app.pools.get({name!r}).run(fn, *args) "
                "with picklable arguments (docs/pools.md)"
            )
        pool.check_handler(handler, f"HTTP route {path}")
        return pool

    def _check_builtin_clash(self, path: str, methods: frozenset[str]) -> None:
        if not methods & {"GET", "HEAD"}:
            return
        for builtin, option in (
            (self.health_path, "health_path"),
            (self.metrics_path, "metrics_path"),
        ):
            if path == builtin:
                raise ValueError(
                    f"GET {path} is the built-in endpoint; move or turn it off first "
                    f"(App({option}=...) or app.http.{option} = None)"
                )

    def handlers(self) -> list[tuple[str, Callable[..., Any]]]:
        """``(path template, endpoint)`` of every route, for the blocked-loop watchdog."""
        routes = [(route.template, route.endpoint) for route in self.router.routes]
        return routes + self.websockets.handlers()

    # ------------------------------------------------------------ built-ins

    def builtin(self, path: str) -> Callable[[], Response] | None:
        """The built-in endpoint at ``path``, if any (they are matched before routes)."""
        if path == self.health_path:
            return self._health
        if path == self.metrics_path:
            return self._metrics
        return None

    def _health(self) -> Response:
        headers = {"Cache-Control": "no-store"}
        try:
            states = self.app.health()
        except Exception:
            log.exception("a backend's health check failed")
            return Response({"status": "error"}, status=503, headers=headers)
        backends = {
            name: {"ok": h.ok, "status": h.status, "detail": h.detail} for name, h in states.items()
        }
        # Degraded (a handler call running too long) stays 200: an orchestrator acting on
        # /health should not kill a worker over one slow call (docs/http.md, "/health").
        if self.app.shutting_down:
            status, code = "shutting down", 503
        elif not all(h.ok for h in states.values()):
            status, code = "unavailable", 503
        elif any(h.degraded for h in states.values()):
            status, code = "degraded", 200
        else:
            status, code = "ok", 200
        return Response({"status": status, "backends": backends}, status=code, headers=headers)

    def _metrics(self) -> Response:
        body, content_type = self.app.metrics.render()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    # ----------------------------------------------------------- lifecycle

    @property
    def active(self) -> bool:
        """Run the server when there is a route, or when asked to (port given, env, enable)."""
        return bool(self.router.routes) or bool(self.websockets.routes) or self._enabled

    def health(self) -> Health:
        if self.serving:
            return Health(True, f"listening on {self.url}")
        if self._in_process:
            return Health(True, "serving in-process only (bind_socket is off)")
        return Health(False, "not listening")

    def _config(self) -> Config:
        from hypercorn.config import Config  # imported when a socket is served, see run()

        config = Config()
        host = f"[{self.host}]" if ":" in self.host else self.host
        config.bind = [f"{host}:{self._port}"]
        config.graceful_timeout = self.app.grace_period
        config.errorlog = log
        config.accesslog = None
        self.apply_limits(config)
        self.websockets.configure(config)
        return config

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`stop`, then let in-flight requests finish (``grace_period``).

        Binding happens before ``task_status.started()``: a taken port raises
        :class:`~trioworker.StartupError` from here, so the app does not start half-way.
        """
        stop = self._stop_event = trio.Event()
        if self.app.shutting_down:
            # Activated (first route) just as the app began to stop: nothing to serve.
            task_status.started()
            return
        if not self.bind_socket:
            # In-process only: the routes are served by whoever calls self.asgi.
            self._in_process = True
            task_status.started()
            try:
                await stop.wait()
            finally:
                self._in_process = False
            return
        # hypercorn (and h11, h2, wsproto under it: about a fifth of `import trioworker`)
        # loads only here, when a socket is served: workers without HTTP routes, process
        # pool children and in-process tests never pay for it.
        from ._server import ConnectionLimit, serve

        # ASGIApp speaks ASGI 3 with plain dicts; hypercorn's TypedDict signature is stricter.
        asgi = cast("Framework", self.asgi)
        limit = self._connections = ConnectionLimit(self.max_connections)
        server = partial(serve, asgi, self._config(), limit, shutdown_trigger=stop.wait)
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    binds: list[str] = await nursery.start(server)
                except Exception as exc:
                    failure = exc  # raised below, outside the nursery: no ExceptionGroup
                else:
                    self._bound_port = _port_of(binds)
                    log.info("HTTP server listening on %s", self.url)
                    task_status.started()
        finally:
            self._bound_port = None
        if failure is not None:
            raise self._startup_error(failure)
        log.info("HTTP server stopped")

    def _startup_error(self, failure: Exception) -> Exception:
        os_error = _find_os_error(failure)
        reason = os_error.strerror or str(os_error) if os_error is not None else repr(failure)
        message = f"the HTTP server cannot listen on {self.host}:{self._port}: {reason}"
        log.error("%s; the app does not start", message)
        error = StartupError(message)
        error.__cause__ = os_error or failure
        return error

    def stop(self) -> None:
        """Begin the graceful stop: no new connections; in-flight requests finish."""
        if self._stop_event is not None:
            self._stop_event.set()
        self.websockets.going_away()  # receive() ends; each handler gets the grace period
