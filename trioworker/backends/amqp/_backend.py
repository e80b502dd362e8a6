"""``app.amqp``: routes fed by RabbitMQ queues, publishing, RPC calls, connections.

Shape::

    AMQPBackend                       registration, publish/call, health, stop
      └── Supervisor (one per connection: URL + vhost)     reconnects with backoff + jitter
            ├── RouteRun (one per route per connection life)   channels, consumers, batcher
            └── Publisher                                      confirm channel, RPC client

The backend runs only when the app uses the broker (see :attr:`AMQPBackend.active`): an
HTTP- or SSE-only app never dials it, and its ``/health`` knows nothing of it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence

import trio
from prometheus_client.metrics_core import Metric

from ... import _settings
from ...codecs import Codec, get_codec
from ...pipeline._actions import Actions
from ...pipeline._backend import AppServices, Health
from ...pipeline._handlers import Handler, handler_name
from ._connections import Connections
from ._failover import check_urls
from ._health import amqp_health
from ._metrics import amqp_families
from ._registration import QueueArg, check_stream_route, split_queues, warn_about
from ._retry_policy import Retry
from ._retrying import ExhaustedHook, route_on_exception
from ._routes import DEFAULT_CONNECTION, AMQPRoute
from ._rpc_route import rpc_handler, typed_consume_handler
from ._sending import Sending
from ._snapshot import pooled_call
from ._streams import StreamOffset, check_stream_offset
from ._supervisor import Supervisor

__all__ = ["AMQPBackend"]


class AMQPBackend(Sending):
    """``app.amqp``: register routes, publish, call, manage connections."""

    name = "amqp"

    def __init__(
        self,
        app: AppServices,
        url: str | Sequence[str],
        prefetch: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        shuffle: bool = False,
        url_source: str = "amqp_url",
    ) -> None:
        self.app = app
        #: The default connection's URLs: one, or the nodes of one cluster (docs/cluster.md);
        #: checked now (``url_source`` says where they came from in the error), not at startup.
        self.urls = check_urls(url, what=url_source)
        self.url = self.urls[0]
        self.prefetch = prefetch
        #: Whether connections try their nodes in a random order (``App(amqp_shuffle=)``).
        self.shuffle = shuffle
        #: Connection name → URLs, TLS context, shuffle (``add_connection()``).
        self.connections = Connections(self.urls, ssl_context=ssl_context, shuffle=shuffle)
        self._supervisors: dict[tuple[str, str | None], Supervisor] = {}
        self.routes: list[AMQPRoute] = []
        self._enabled = False
        # Per serve: started on demand (a publish or call), and how far stop() went. They
        # outlive a stop() that comes before run() began (started on demand just as the
        # app began to stop) and are cleared when run() ends.
        self._on_demand = False
        self._consuming_stopped = False
        self._stopped = False
        self._stop_requested = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: Set once run() has its nursery (or has ended): what on-demand callers wait for.
        self._ready = trio.Event()

    # ------------------------------------------------------------ settings

    def add_connection(
        self,
        name: str,
        url: str | Sequence[str],
        *,
        ssl_context: ssl.SSLContext | None = None,
        shuffle: bool | None = None,
    ) -> None:
        """Name another broker (or the same with other credentials) for routes to use:
        one URL or the URLs of one cluster's nodes (``shuffle``: try them in a random
        order; default: as the app's ``amqp_shuffle``); ``ssl_context`` for its TLS (a
        private CA, a client certificate)."""
        self.connections.add(name, url, ssl_context=ssl_context, shuffle=shuffle)

    def _supervisor(self, connection: str, vhost: str | None) -> Supervisor:
        key = (connection, vhost)
        sup = self._supervisors.get(key)
        if sup is None:
            sup = Supervisor(
                self.app,
                key,
                self.connections.urls(connection, vhost),
                shuffle=self.connections.shuffle_of(connection),
            )
            sup.ssl_context = self.connections.ssl_context_of(connection)
            self._supervisors[key] = sup
            if self._nursery is not None:
                self._follow_stop(sup)
                self._nursery.start_soon(sup.run)
        return sup

    def _follow_stop(self, sup: Supervisor) -> None:
        """Bring a supervisor starting now to where the backend's stop has got."""
        if self._stopped:
            sup.stop()
        elif self._consuming_stopped:
            sup.stop_consuming()

    def enable(self) -> None:
        """Run the backend with the app even without routes.

        It then connects at startup, so the first publish or call finds the connection
        open, and ``/health`` reports the broker. Without routes and without this, the
        backend starts on the first ``publish()`` or ``call()`` (see docs/amqp.md).
        Called on a running app, it starts the backend at once.
        """
        self._enabled = True
        if self._nursery is None:
            self.app.start_backend(self)
        else:
            self._supervisor(DEFAULT_CONNECTION, None).publisher.want()

    # -------------------------------------------------------------- routes

    def consume(
        self,
        queues: QueueArg,
        *,
        bulk_size: int = 1,
        flush_interval: float | None = None,
        on_success: Actions = Actions.ACK,
        on_exception: Actions | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        vhost: str | None = None,
        connection: str = DEFAULT_CONNECTION,
        declare: bool = False,
        timeout: float | None = None,
        name: str | None = None,
        codec: str | Codec = "json",
        accept: Sequence[str | Codec] = (),
        retry: Retry | None = None,
        on_exhausted: ExhaustedHook | None = None,
        pool: str | None = None,
        stream_offset: StreamOffset | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for one or more queues; it receives ``list[Message]``.

        A handler whose parameter is annotated ``list[Model]`` (a dataclass or a pydantic
        model) receives the bodies decoded with ``codec`` (or the codec the message's
        ``content_type``/``content_encoding`` name) and validated; see docs/rpc.md.
        ``pool=``: a named thread or process pool (docs/pools.md). ``stream_offset=``:
        where a ``Queue(kind="stream")`` is read from the first time ("Streams").
        See docs/amqp.md for every option. The handler is returned unchanged, so it can
        still be called directly in tests.
        """
        get_codec(codec)  # an unknown codec fails at registration
        if stream_offset is not None:
            check_stream_offset(stream_offset)
        accept = tuple(accept)
        for extra in accept:
            get_codec(extra)
        queue_list, topology = split_queues(queues)
        on_exception = route_on_exception(on_exception, retry, on_exhausted)  # docs/retries.md
        if not isinstance(on_success, Actions) or not isinstance(on_exception, Actions):
            raise TypeError("on_success and on_exception must be trioworker.Actions members")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        self.connections.urls(connection, vhost)  # unknown connection: fail at registration

        def register(handler: Handler) -> Handler:
            call = pooled_call(self, pool, handler, name, codec, accept)  # docs/pools.md
            route = AMQPRoute(
                handler=typed_consume_handler(handler, codec, accept, call=call) or call or handler,
                queues=queue_list,
                bulk_size=bulk_size,
                flush_interval=(
                    _settings.flush_interval() if flush_interval is None else flush_interval
                ),
                on_success=on_success,
                on_exception=on_exception,
                concurrency=concurrency,
                prefetch=self.prefetch if prefetch is None else prefetch,
                connection=connection,
                vhost=vhost,
                declare=declare,
                timeout=timeout,
                name=name or handler_name(handler),
                topology=topology,
                retry=retry,
                on_exhausted=on_exhausted,
                stream_offset="next" if stream_offset is None else stream_offset,
            )
            check_stream_route(route, offset_given=stream_offset is not None)
            if route.bulk_size < 1 or route.concurrency < 1 or route.prefetch < 1:
                raise ValueError("bulk_size, concurrency and prefetch must be at least 1")
            warn_about(route, self.routes)
            self.routes.append(route)
            self._supervisor(connection, vhost).add_route(route)
            if self._nursery is None:
                self.app.start_backend(self)  # the first route of a running app
            return handler

        return register

    def rpc(
        self,
        queue: str,
        *,
        codec: str | Codec = "json",
        accept: Sequence[str | Codec] = (),
        concurrency: int = 64,
        timeout: float | None = None,
        prefetch: int | None = None,
        declare: bool = True,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
        name: str | None = None,
        pool: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register an RPC handler: it receives the request ``Message`` (or, annotated
        with a dataclass/pydantic model, the validated body; with an envelope codec such as
        ``"amqp_worker"``, the request's value) and returns the reply value.

        The reply goes to the request's ``reply_to`` through the default exchange with the
        same ``correlation_id``, encoded with ``codec``. The request queue is declared
        (durable) unless ``declare=False``. Requests are handled concurrently, at most
        ``concurrency`` at once, taken in bulks of what is waiting. See docs/rpc.md.
        """
        get_codec(codec)
        accept = tuple(accept)
        for extra in accept:
            get_codec(extra)
        self.connections.urls(connection, vhost)
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")

        def register(handler: Handler) -> Handler:
            call = pooled_call(self, pool, handler, name, codec, accept)  # docs/pools.md
            # Replies go out on the publishing connection, opened with the routes.
            publisher = self._supervisor(connection, vhost).publisher
            route = AMQPRoute(
                handler=rpc_handler(
                    handler,
                    codec,
                    timeout,
                    publisher=publisher,
                    concurrency=concurrency,
                    accept=accept,
                    call=call,
                ),
                queues=(queue,),
                bulk_size=concurrency,  # a bulk: the requests waiting (flush interval 0)
                flush_interval=0.0,
                on_success=Actions.ACK,
                on_exception=Actions.ACK,
                concurrency=concurrency,
                prefetch=self.prefetch if prefetch is None else prefetch,
                connection=connection,
                vhost=vhost,
                declare=declare,
                timeout=None,  # the RPC wrapper applies it, so a timeout still gets a reply
                name=name or handler_name(handler),
            )
            if route.concurrency < 1 or route.prefetch < 1:
                raise ValueError("concurrency and prefetch must be at least 1")
            publisher.want()
            self.routes.append(route)
            self._supervisor(connection, vhost).add_route(route)
            if self._nursery is None:
                self.app.start_backend(self)  # the first route of a running app
            return handler

        return register

    async def _running_supervisor(
        self, what: str, connection: str, vhost: str | None
    ) -> Supervisor:
        """The supervisor of ``connection``/``vhost``, the backend started on demand first
        if the app runs without it (it had no routes)."""
        if self._nursery is None:
            self.connections.urls(connection, vhost)  # an unknown connection fails first
            self._on_demand = True
            if not self.app.start_backend(self):  # not running, or shutting down
                self._on_demand = False
                raise RuntimeError(f"app.amqp.{what}() needs a running app (serve() or open_app())")
            await self._ready.wait()
            if self._nursery is None:
                raise RuntimeError(f"app.amqp.{what}(): the app stopped meanwhile")
        return self._supervisor(connection, vhost)

    # ----------------------------------------------------------- lifecycle

    @property
    def supervisors(self) -> Iterable[Supervisor]:
        """One per (connection, vhost) in use: its state, for tests and metrics."""
        return self._supervisors.values()

    @property
    def active(self) -> bool:
        """Whether the app runs this backend: when a consume or RPC route is registered,
        :meth:`enable` was called, or a ``publish()``/``call()`` on the running app asked
        for it. Otherwise the app never dials the broker."""
        return bool(self.routes) or self._enabled or self._on_demand

    def collect(self) -> Iterator[Metric]:
        """This backend's metric families, for ``app.metrics`` (a :data:`MetricsSource`)."""
        return amqp_families(self._supervisors.values())

    def health(self) -> Health:
        """Healthy when every connection is open and every route consumes all its queues;
        degraded while a handler call runs too long (see ``_health.py``)."""
        return amqp_health(self._supervisors.values(), self.app.slow_handler_threshold)

    def handlers(self) -> list[tuple[str, Handler]]:
        """``(route name, handler)`` of every route, for the blocked-loop watchdog."""
        return [(route.name, route.handler) for route in self.routes]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every connection until :meth:`stop` has drained them all."""
        try:
            if self._stopped:  # stopped before it began: started on demand as the app stopped
                task_status.started()
                return
            if self.app.shutting_down:  # started on demand by a draining handler: no routes
                self._consuming_stopped = True
            urls = [u for key in self._supervisors for u in self.connections.urls(*key)]
            urls += self.connections.all_urls()
            brokers: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
            if any(url.startswith("memory:") for url in urls):  # docs/memory-broker.md
                from ...testing._broker import serve_memory_urls  # only memory:// apps load it

                brokers = serve_memory_urls(urls)  # for names no broker runs under yet
            async with brokers, trio.open_nursery() as nursery:
                for sup in self._supervisors.values():
                    sup.reset()
                    self._follow_stop(sup)
                if self._enabled:  # connect at startup, the publishing connection too
                    self._supervisor(DEFAULT_CONNECTION, None).publisher.want()
                self._nursery = nursery  # from now on, new supervisors start at once
                self._ready.set()
                for sup in list(self._supervisors.values()):
                    nursery.start_soon(sup.run)
                for sup in list(self._supervisors.values()):
                    await sup.wait_first_attempt()
                    if sup.startup_error is not None:
                        raise sup.startup_error  # refused credentials/vhost/TLS, a 406
                task_status.started()
                # Open until stop(): a publish may need a supervisor for a new connection.
                await self._stop_requested.wait()
        finally:
            self._nursery = None
            self._on_demand = self._consuming_stopped = self._stopped = False
            self._stop_requested = trio.Event()
            self._ready.set()  # on-demand callers still waiting find the backend stopped
            self._ready = trio.Event()

    async def wait_up(self) -> None:
        """Wait until every connection is open and every route consumes all its queues
        (what ``@app.on_started`` hooks wait for)."""
        for sup in list(self._supervisors.values()):
            await sup.wait_up()

    def stop_consuming(self) -> None:
        """Begin the graceful stop of every route (see :meth:`RouteRun.stop`), keeping the
        connections open for publishing and calls until :meth:`stop`.

        The app calls this first at shutdown, so that HTTP requests, SSE handlers and
        timer runs finishing in their grace period can still publish.
        """
        self._consuming_stopped = True
        for sup in self._supervisors.values():
            sup.stop_consuming()

    def stop(self) -> None:
        """Stop every route (if not yet stopping) and then close every connection."""
        self._consuming_stopped = self._stopped = True
        self._stop_requested.set()
        for sup in self._supervisors.values():
            sup.stop()

    def redirect(self, url: str | None) -> None:
        """Point every connection at the broker of ``url``, each keeping its vhost (what
        ``TestClient`` does); ``redirect(None)`` puts the configured URLs back. Only before
        the app runs (:class:`RuntimeError`)."""
        if self._nursery is not None:
            raise RuntimeError("app.amqp.redirect() cannot move the connections of a running app")
        self.connections.redirect(url)
        self.urls = self.connections.urls(DEFAULT_CONNECTION)
        self.url = self.urls[0]
        for key, sup in self._supervisors.items():
            sup.use_urls(self.connections.urls(*key))
