"""``app.nameko``: the app as a Nameko service named ``app.name`` (docs/nameko.md).

It is not a backend of its own: event handlers and RPC methods are ``app.amqp`` consume
routes on Nameko's queues, dispatches and calls go out on ``app.amqp``'s publishing
connection. So reconnects, graceful shutdown, bulks, retries, ``/health`` and metrics are
those of every AMQP route.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import trio

from ...amqp import BasicProperties
from ...pipeline._actions import Actions
from ...pipeline._handlers import Handler
from ._calls import Calls
from ._context import (
    DEFAULT_PARENT_CALLS_TRACKED,
    NamekoContext,
    current_context,
    new_call_id,
)
from ._events import DECODING, HANDLER_TYPES, event_queue, event_route_handler
from ._link import Declarer, serve_declarer
from ._rpc_server import RpcMethods, rpc_queue
from ._wire import NAMEKO_JSON, RPC_EXCHANGE, HandlerType, event_exchange, reply_queue_name

if TYPE_CHECKING:
    from ...pipeline._backend import AppServices
    from ..amqp._backend import AMQPBackend

__all__ = ["NamekoService"]

H = TypeVar("H", bound=Handler)

#: Route options an event handler passes on to ``app.amqp.consume`` (the queue, its
#: declaration and decoding are Nameko's; the connection is the app's default one).
_ROUTE_OPTIONS = frozenset(
    {
        "bulk_size",
        "flush_interval",
        "on_success",
        "on_exception",
        "concurrency",
        "prefetch",
        "timeout",
        "retry",
        "on_exhausted",
    }
)


class NamekoService:
    """``app.nameko``: Nameko events and RPC, both directions, as service ``app.name``."""

    def __init__(self, app: AppServices, amqp: AMQPBackend) -> None:
        self._app = app
        self._amqp = amqp
        self._calls = Calls(amqp)
        self._rpc: RpcMethods | None = None
        self._rpc_concurrency = 64
        self._rpc_prefetch: int | None = None
        self._parent_calls_tracked = DEFAULT_PARENT_CALLS_TRACKED

    @property
    def service_name(self) -> str:
        """The Nameko service name: ``app.name``."""
        return self._app.name

    @property
    def reply_queue(self) -> str:
        """The reply queue of :meth:`call` (``rpc.reply-{app.name}-{uuid}``, one per app
        instance; declared on the first call, gone 5 minutes after its last consumer)."""
        return reply_queue_name(self.service_name, self._calls.routing_key)

    def configure(
        self,
        *,
        rpc_concurrency: int | None = None,
        rpc_prefetch: int | None = None,
        parent_calls_tracked: int | None = None,
    ) -> None:
        """Service-wide settings (Nameko's ``max_workers`` and ``parent_calls_tracked``):
        RPC requests handled at once (default 64) and taken from the queue ahead (default:
        as many) — set before the first ``@rpc`` method, whose route they shape — and
        parents kept in a call id stack (default 10)."""
        if (rpc_concurrency is not None or rpc_prefetch is not None) and self._rpc is not None:
            raise RuntimeError("configure the RPC route before registering @app.nameko.rpc methods")
        for value in (rpc_concurrency, rpc_prefetch):
            if value is not None and value < 1:
                raise ValueError("rpc_concurrency and rpc_prefetch must be at least 1")
        if parent_calls_tracked is not None and parent_calls_tracked < 0:
            raise ValueError("parent_calls_tracked must be 0 or more")
        if rpc_concurrency is not None:
            self._rpc_concurrency = rpc_concurrency
        if rpc_prefetch is not None:
            self._rpc_prefetch = rpc_prefetch
        if parent_calls_tracked is not None:
            self._parent_calls_tracked = parent_calls_tracked

    # -------------------------------------------------------------- events

    def event_handler(
        self,
        source_service: str,
        event_type: str,
        handler_type: HandlerType = "service_pool",
        reliable_delivery: bool = True,
        *,
        name: str | None = None,
        broadcast_identifier: str | None = None,
        **route_options: Any,
    ) -> Callable[[H], H]:
        """Handle ``event_type`` events of ``source_service`` (see docs/nameko.md).

        The queue is Nameko's for ``handler_type``, so instances of this app compete for
        the events (``service_pool``, ``singleton``) or each get all of them
        (``broadcast``). ``name`` is the method name in the queue name (default: the
        function's). A broadcast handler needs ``reliable_delivery=False`` unless given a
        stable ``broadcast_identifier`` (Nameko's rule: the default, a fresh uuid per
        instance, would leave a durable queue behind at every restart). Other options go
        to ``app.amqp.consume`` (``bulk_size``, ``on_exception``, ``retry``, ...).
        """
        if handler_type not in HANDLER_TYPES:
            raise ValueError(f"handler_type {handler_type!r}: expected one of {HANDLER_TYPES}")
        unknown = set(route_options) - _ROUTE_OPTIONS
        if unknown:
            raise TypeError(f"event_handler() got unexpected options {sorted(unknown)}")
        if handler_type == "broadcast" and broadcast_identifier is None:
            if reliable_delivery:
                raise ValueError(
                    "a broadcast handler with reliable_delivery=True needs a stable "
                    "broadcast_identifier= (as in Nameko): the default, a new uuid per "
                    "instance, would leave a durable queue behind at every restart; pass "
                    "reliable_delivery=False or broadcast_identifier="
                )
            broadcast_identifier = uuid.uuid4().hex
        _check_names(source_service=source_service, event_type=event_type)
        if name is not None:
            _check_names(method=name)
        bulk_size = route_options.get("bulk_size", 1)

        def register(handler: H) -> H:
            method = name or _function_name(handler)
            _check_names(method=method)
            service = self.service_name
            queue = event_queue(
                source_service,
                event_type,
                handler_type,
                service=service,
                method=method,
                reliable_delivery=reliable_delivery,
                broadcast_identifier=broadcast_identifier,
            )
            wrapped = event_route_handler(
                handler,
                many=bulk_size > 1,
                service=service,
                method=method,
                parent_calls_tracked=self._tracked,
            )
            self._amqp.consume(
                queue,
                declare=True,
                codec=DECODING.codec,
                accept=DECODING.accept,
                name=f"nameko {service}.{method}",
                **route_options,
            )(wrapped)
            return handler

        return register

    async def dispatch(
        self,
        event_type: str,
        payload: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as app.amqp.publish
    ) -> None:
        """Dispatch an event of this service, as Nameko's ``EventDispatcher``: to the
        ``{app.name}.events`` topic exchange (declared first), routing key
        ``event_type``, JSON, persistent, confirmed, with the current context's headers.
        Returns once the broker took it (no listener need exist). ``timeout`` bounds the
        whole, waiting for the connection included."""
        body = NAMEKO_JSON.encode(payload)
        exchange = event_exchange(self.service_name)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with trio.move_on_at(deadline) as scope:
            declarer = await self._amqp.connection_helper(
                "nameko.declarer", serve_declarer, what="publish"
            )
            assert isinstance(declarer, Declarer)
            await declarer.declare(exchange)
        if scope.cancelled_caught:
            raise TimeoutError(
                f"app.nameko.dispatch({event_type!r}): no connection within {timeout} s"
            )
        remaining = None if timeout is None else max(0.0, deadline - trio.current_time())
        await self._amqp.publish(
            body,
            routing_key=event_type,
            exchange=exchange.name,
            properties=BasicProperties(
                content_type=NAMEKO_JSON.content_type,
                content_encoding=NAMEKO_JSON.content_encoding,
                delivery_mode=2,
                headers=self._outgoing("dispatch").headers(),
            ),
            timeout=remaining,
        )

    # ----------------------------------------------------------------- RPC

    @overload
    def rpc(self, handler: H, /) -> H: ...

    @overload
    def rpc(self, *, name: str | None = None, timeout: float | None = None) -> Callable[[H], H]: ...

    def rpc(
        self,
        handler: Handler | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Serve a function as method ``name`` (default: its name) of this service:
        ``@app.nameko.rpc`` or ``@app.nameko.rpc(name="get", timeout=5)``. Nameko calls it
        with the request's ``*args, **kwargs``; its return value (JSON) is the result."""
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if name is not None:
            _check_names(method=name)

        def register(fn: Handler) -> Handler:
            method = name or _function_name(fn)
            _check_names(method=method)
            methods = self._rpc_methods()
            if method in methods:
                raise ValueError(f"Nameko RPC method {method!r} is already registered")
            methods.add(method, fn, timeout)
            return fn

        return register if handler is None else register(handler)

    def handlers(self) -> list[tuple[str, Handler]]:
        """``(name, handler)`` of each RPC method, named ``nameko rpc-<service>.<method>``:
        the blocked-loop watchdog names the method, not the route serving them all."""
        return self._rpc.handlers() if self._rpc is not None else []

    def _rpc_methods(self) -> RpcMethods:
        """The service's RPC methods: the first registers their route."""
        if self._rpc is None:
            service = self.service_name
            methods = RpcMethods(service, self._reply, self._tracked)
            self._amqp.consume(
                rpc_queue(service),
                bulk_size=1,
                flush_interval=0.0,
                on_success=Actions.ACK,
                on_exception=Actions.ACK,
                concurrency=self._rpc_concurrency,
                # Requests past those being handled wait in the queue, where another
                # instance can take them (Nameko: prefetch = max_workers).
                prefetch=self._rpc_prefetch or self._rpc_concurrency,
                declare=True,
                codec=DECODING.codec,
                accept=DECODING.accept,
                name=f"nameko rpc-{service}",
            )(methods.handle)
            self._amqp.enable()  # replies go out on the publishing connection: open it early
            self._rpc = methods
        return self._rpc

    def _tracked(self) -> int:
        return self._parent_calls_tracked

    async def _reply(self, body: bytes, *, routing_key: str, properties: Any) -> None:
        await self._amqp.publish(
            body, routing_key=routing_key, exchange=RPC_EXCHANGE.name, properties=properties
        )

    async def call(
        self,
        service: str,
        method: str,
        *args: Any,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the documented API
        **kwargs: Any,
    ) -> Any:
        """Call ``service.method(*args, **kwargs)`` on a Nameko service; return its result.

        Raises :class:`~trioworker.nameko.RemoteError` (``exc_type``, ``exc_path``,
        ``value``, ``exc_args``) if it raised, :class:`~trioworker.nameko.UnknownService`
        at once if no service of that name listens, ``TimeoutError`` after ``timeout``
        seconds (``None``: wait). Carries the current context (docs/nameko.md).
        """
        body = NAMEKO_JSON.encode({"args": list(args), "kwargs": kwargs})
        return await self._calls.call(
            self.service_name,
            service,
            method,
            body,
            headers=self._outgoing("call").headers(),
            timeout=timeout,
        )

    def _outgoing(self, what: str) -> NamekoContext:
        """The context a call or dispatch carries: the current one, or — outside any
        handler — a new one whose stack starts here (``{app.name}.call.{uuid}``)."""
        context = current_context()
        if context is not None:
            return context
        return NamekoContext(
            new_call_id(self.service_name, what), parent_calls_tracked=self._parent_calls_tracked
        )


def _function_name(handler: Handler) -> str:
    name = getattr(handler, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise TypeError(f"{handler!r} has no usable name: pass name=")
    return name


def _check_names(**names: str) -> None:
    """Names that become routing-key words must not be empty or hold a dot (``svc.method``
    is split on dots) — a typo here would be a queue nobody ever publishes to."""
    for what, value in names.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} must be a non-empty str")
        if what == "method" and "." in value:
            raise ValueError(f"{what} {value!r} must not contain a dot")
