"""The ASGI application hypercorn serves: routing, error answers, /health and /metrics.

Every request ends in exactly one response and one ``app.metrics.http_request`` call,
labelled by the route *template* (``/items/{id}``) so a metric series does not appear per
item id; paths no route knows share the label :data:`UNMATCHED`, and methods outside the
standard set share ``OTHER``, so a scanner cannot blow up the metric's cardinality.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..._log_context import bind, log_context
from ...http._errors import HTTPError, RequestTimeout
from ...http._request import ClientDisconnect, Request
from ...http._response import Response, to_response
from ...http._routing import METHODS, Router

if TYPE_CHECKING:
    from ...pipeline import AppServices
    from ._websocket import WebSocketRoutes

__all__ = ["UNMATCHED", "ASGIApp", "Site"]

log = logging.getLogger("trioworker.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: The route label of requests no route matched (404s, and 405s of unknown methods).
UNMATCHED = "<unmatched>"
_BUILTIN_METHODS = frozenset({"GET", "HEAD"})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response({"error": message}, status=status, headers=headers)


def _not_allowed(allowed: frozenset[str]) -> Response:
    allow = ", ".join(sorted(allowed))
    return _error(405, "method not allowed", {"Allow": allow})


class Site(Protocol):
    """What the ASGI app serves: the HTTP backend's routes, built-ins and limits."""

    @property
    def app(self) -> AppServices:
        """The app: its metrics, and what handlers get as ``request.app``."""
        ...

    @property
    def router(self) -> Router: ...

    @property
    def max_body_size(self) -> int: ...

    @property
    def max_header_size(self) -> int:
        """Largest request head (headers) accepted, in bytes."""
        ...

    @property
    def body_timeout(self) -> float | None:
        """Seconds from the headers to the end of the body; None: no limit."""
        ...

    def builtin(self, path: str) -> Callable[[], Response] | None:
        """The built-in endpoint (/health, /metrics) at ``path``, if any."""
        ...

    @property
    def websockets(self) -> WebSocketRoutes:
        """The WebSocket routes, which run the ``websocket`` scopes."""
        ...


class ASGIApp:
    """``await asgi(scope, receive, send)`` for one HTTP backend (its :class:`Site`)."""

    def __init__(self, backend: Site) -> None:
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            with log_context():  # the route bound in _respond ends with the request
                await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            with log_context():  # the route bound by serve() ends with the socket
                await self.backend.websockets.serve(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        label = UNMATCHED
        status = 500
        try:
            response, label = await self._respond(scope, receive)
            status = response.status
            await _send(send, response)
        except ClientDisconnect:
            status = 499  # nginx's "client closed request": nothing was sent
        finally:
            method_label = method if method in METHODS else "OTHER"
            self._record(method_label, label, status, time.perf_counter() - started)

    def _record(self, method: str, route: str, status: int, seconds: float) -> None:
        try:
            self.backend.app.metrics.http_request(method, route, status, seconds)
        except Exception:
            # Metrics must never cost a request its answer.
            log.exception("recording HTTP metrics failed")

    async def _respond(self, scope: Scope, receive: Receive) -> tuple[Response, str]:
        """The response for this request and the route label it counts under."""
        backend = self.backend
        method: str = scope["method"]
        path: str = scope["path"]
        if "\0" in path:
            # A decoded %00 would reach handlers as a NUL character, which truncates paths
            # in C APIs and file systems. No route can mean it: refuse before routing.
            return _error(400, "the request path contains a NUL character (%00)"), UNMATCHED
        if _head_size(scope) > backend.max_header_size:
            # h11 bounds only a head still incomplete; one that arrived whole in a single
            # read is checked here, so the limit means the same however it was sent.
            limit = backend.max_header_size
            return _error(431, f"request headers larger than {limit} bytes"), UNMATCHED
        builtin = backend.builtin(path)
        if builtin is not None:
            if method not in _BUILTIN_METHODS:
                return _not_allowed(_BUILTIN_METHODS), path
            try:
                return builtin(), path
            except Exception:
                log.exception("%s %s: the built-in endpoint failed", method, path)
                return _error(500, "internal server error"), path
        found = backend.router.resolve(method, path)
        route = found.route
        if route is None:
            if found.allowed:
                return _not_allowed(found.allowed), UNMATCHED
            return _error(404, "not found"), UNMATCHED
        bind(route=route.template)  # log lines about this request name its route
        if backend.body_timeout is not None:
            receive = _timed(receive, backend.body_timeout)
        request = Request(
            scope,
            receive,
            app=backend.app,
            path_params=found.params,
            route=route.template,
            max_body_size=backend.max_body_size,
        )
        try:
            result = await route.endpoint(request)
            return to_response(result), route.template
        except ClientDisconnect:
            raise
        except HTTPError as exc:
            # After a 408 the body's rest may still trickle in: say the connection ends
            # (RFC 9110 §15.5.9); hypercorn closes it as the request was not read whole.
            close = {"Connection": "close"} if isinstance(exc, RequestTimeout) else None
            return _error(exc.status, exc.message, close), route.template
        except Exception:
            log.exception("%s %s: handler %s failed", method, path, route.name)
            return _error(500, "internal server error"), route.template


def _head_size(scope: Scope) -> int:
    """Bytes of the request line and headers, as on the wire (give or take a space)."""
    size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 16
    for name, value in scope.get("headers", ()):
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size


def _timed(receive: Receive, seconds: float) -> Receive:
    """``receive`` that raises :class:`RequestTimeout` past ``seconds`` from now.

    The deadline is for the whole body, not per chunk: a client sending one byte a second
    never lets a per-read timeout expire, and would hold its connection indefinitely.
    """
    deadline = trio.current_time() + seconds

    async def receive_before_deadline() -> dict[str, Any]:
        with trio.move_on_at(deadline):
            return await receive()
        raise RequestTimeout(seconds)

    return receive_before_deadline


async def _send(send: Send, response: Response) -> None:
    # For HEAD, hypercorn drops the body itself (suppress_body) and keeps our headers, so a
    # HEAD answer carries the Content-Length the GET answer would have (RFC 9110 §9.3.2).
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.raw_headers(),
        }
    )
    body = response.body if response.has_body else b""
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up: the app's own startup hooks have run before the server starts.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
