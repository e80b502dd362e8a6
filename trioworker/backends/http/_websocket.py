"""WebSocket routes: the table ``@app.http.websocket`` fills, and how a connection is run.

hypercorn (wsproto) speaks the protocol: handshake, framing, masking, the answers to pings,
the close handshake, and the server-wide message size limit (``websocket_max_message_size``,
set here to the largest route limit; a message over it is cut off with close code 1009
while it arrives, so it never sits whole in memory). This module routes the handshake,
runs the handler with a :class:`~trioworker.http.WebSocket`, and ends the connection:

- unknown path: HTTP 404 during the handshake (ASGI's ``websocket.http.response``
  extension; 403 from a server without it); a decoded NUL in the path: 400; while the app
  stops: 503;
- the handler returns: close 1000 (1001 at shutdown); it raises: close 1011 and one log
  line with the traceback; the client went away: nothing to close, nothing logged;
- shutdown (:meth:`WebSocketRoutes.going_away`): every socket's ``receive()`` raises
  ``WebSocketDisconnect(1001)`` at once, so a handler looping on it can finish, and the
  handler has ``app.grace_period`` seconds before it is cancelled; the socket is then
  closed with 1001.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import trio

from ..._log_context import bind
from ...http._response import Response
from ...http._routing import Route, Router
from ...http._websocket import WebSocket, WebSocketDisconnect, WebSocketState
from ...http._ws_rpc import RPCFunctions

if TYPE_CHECKING:
    from hypercorn.config import Config

    from ...pipeline import AppServices

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "RPCTargets", "WebSocketHandler", "WebSocketRoutes"]

log = logging.getLogger("trioworker.http")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
WebSocketHandler = Callable[[WebSocket], Awaitable[Any]]
#: What ``websocket_rpc`` exposes: name → function, or functions (named by ``__name__``).
RPCTargets = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]

#: Default ``max_message_size`` of a WebSocket route: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: Seconds the closing frame of a socket may take to leave at shutdown (a client that does
#: not read must not hold the app's stop).
CLOSE_TIMEOUT = 2.0
_HANDSHAKE = (frozenset({"GET"}),)  # a WebSocket handshake is a GET (RFC 6455 §4.1)


class _Endpoint:
    """A route's handler and limit (what the router resolves a handshake to)."""

    def __init__(self, handler: WebSocketHandler, max_message_size: int, name: str) -> None:
        self.handler = handler
        self.max_message_size = max_message_size
        self.name = name

    async def __call__(self, socket: WebSocket) -> Any:
        return await self.handler(socket)


class _Session:
    """One open socket: its handler's cancel scope, for the grace period at shutdown."""

    def __init__(self, socket: WebSocket, send: Send) -> None:
        self.socket = socket
        self.send = send
        self.scope = trio.CancelScope()
        self.stopping = False

    def stop(self, grace_period: float) -> None:
        self.stopping = True
        self.socket.stop_receiving(1001, "server shutting down")
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace_period)

    async def run(self, endpoint: _Endpoint) -> None:
        failed = False
        try:
            with self.scope:
                await endpoint.handler(self.socket)
        except Exception as exc:
            if not _only_disconnects(exc):
                failed = True
                log.exception("WebSocket handler %s for %s failed", endpoint.name, self.socket.path)
        finally:
            # The server's own deadline is the same instant, so the cancellation may come
            # from it rather than from self.scope: this runs either way.
            if self.scope.cancel_called:
                log.warning(
                    "WebSocket handler %s for %s did not finish within the grace period: cancelled",
                    endpoint.name,
                    self.socket.path,
                )
            # Shielded (an outer cancel is the server's own deadline) but bounded.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                await self._end(failed)

    async def _end(self, failed: bool) -> None:
        socket = self.socket
        if socket.state is WebSocketState.CONNECTING:
            if failed or self.stopping:
                await refuse(socket.scope, self.send, 500 if failed else 503)
            else:
                await socket.close(1008)  # never accepted: the handshake is refused (403)
        elif socket.state is WebSocketState.CONNECTED:
            if failed:
                await socket.close(1011, "internal error")
            elif self.stopping:
                await socket.close(1001, "server shutting down")
            else:
                await socket.close(1000)


def _endpoint(route: Route) -> _Endpoint:
    return cast("_Endpoint", route.endpoint)  # what add() registered


def _only_disconnects(exc: BaseException) -> bool:
    if isinstance(exc, WebSocketDisconnect):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_disconnects(inner) for inner in exc.exceptions)
    return False


_REASONS = {
    400: "the request path contains a NUL character (%00)",
    404: "not found",
    500: "internal server error",
}


async def refuse(scope: Scope, send: Send, status: int) -> None:
    """Answer the handshake with an HTTP error instead of accepting it."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        return
    message = _REASONS.get(status, "server shutting down")
    response = Response({"error": message}, status=status)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": response.raw_headers(),
        }
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


def _check_size(max_message_size: int) -> int:
    if (
        isinstance(max_message_size, bool)
        or not isinstance(max_message_size, int)
        or max_message_size < 1
    ):
        raise ValueError(f"max_message_size must be an int of at least 1, got {max_message_size!r}")
    return max_message_size


class WebSocketRoutes:
    """``app.http``'s WebSocket routes (:attr:`HTTPBackend.websockets`)."""

    def __init__(self, app: AppServices) -> None:
        self.app = app
        self.router = Router()
        self._sessions: set[_Session] = set()
        self._stopping = False

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

    @property
    def open(self) -> int:
        """How many WebSocket connections are open now."""
        return len(self._sessions)

    def add(
        self,
        path: str,
        handler: WebSocketHandler,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        name: str | None = None,
    ) -> None:
        """Route handshakes for ``path`` (a template, as for HTTP routes) to ``handler``."""
        if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - callable objects
        ):
            raise TypeError(
                f"a WebSocket handler must be an async def taking the socket, got {handler!r}"
            )
        label = name or str(getattr(handler, "__qualname__", None) or repr(handler))
        endpoint = _Endpoint(handler, _check_size(max_message_size), label)
        self.router.add(*_HANDSHAKE, path, endpoint, name=label)

    def add_rpc(
        self,
        path: str,
        functions: RPCTargets,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> RPCFunctions:
        """Serve ``functions`` at ``path`` in micro_framework's WebSocket RPC JSON."""
        rpc = RPCFunctions(functions)

        async def rpc_endpoint(socket: WebSocket) -> None:
            async for message in socket:
                await socket.send(await rpc.answer(message))

        self.add(path, rpc_endpoint, max_message_size=max_message_size, name=f"rpc {path}")
        return rpc

    def handlers(self) -> list[tuple[str, Callable[..., Any]]]:
        """``(path template, user handler)`` of every route, for the blocked-loop watchdog."""
        return [(route.template, _endpoint(route).handler) for route in self.router.routes]

    def configure(self, config: Config) -> None:
        """As the server starts: hypercorn's message limit is the largest route's (each
        route checks its own), and handshakes are welcome (again, after a stop)."""
        sizes = [_endpoint(route).max_message_size for route in self.router.routes]
        config.websocket_max_message_size = max(sizes, default=DEFAULT_MAX_MESSAGE_SIZE)
        self._stopping = False

    def going_away(self) -> None:
        """The server stops: end every socket's reading and start its grace period."""
        self._stopping = True
        for session in list(self._sessions):
            session.stop(self.app.grace_period)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one WebSocket connection (the ASGI ``websocket`` scope) to its end."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake was routed
        if self._stopping:
            await refuse(scope, send, 503)
            return
        if "\0" in scope["path"]:  # as for HTTP requests: no route can mean a decoded %00
            await refuse(scope, send, 400)
            return
        found = self.router.resolve("GET", scope["path"])
        route = found.route
        if route is None:
            await refuse(scope, send, 404)
            return
        endpoint = _endpoint(route)
        bind(route=route.template)  # log lines about this socket name its route
        socket = WebSocket(
            scope,
            receive,
            send,
            app=self.app,
            path_params=found.params,
            route=route.template,
            max_message_size=endpoint.max_message_size,
        )
        session = _Session(socket, send)
        self._sessions.add(session)
        try:
            await session.run(endpoint)
        finally:
            self._sessions.discard(session)
