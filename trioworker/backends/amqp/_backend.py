"""The AMQP backend: routes fed by RabbitMQ queues, publishing, reconnects, graceful stop.

Shape (design.md)::

    _Supervisor (one per connection: URL + vhost)      reconnects with backoff + jitter
      └── _RouteRun (one per route per connection life)
            ├── one channel + consumer + AckTracker per queue ── Message ──▶ Batcher
            └── Batcher ── bulk ──▶ handler ── outcome ──▶ decisions ──▶ AckTracker ──▶ frames

A route consumes each of its queues on its own channel: delivery tags are per channel, and
one consumer per channel keeps them in delivery order, which is what lets the tracker turn
runs of acks into one ``Basic.Ack(multiple=True)``.

When the connection dies, everything tied to it is cancelled: buffered deliveries are
dropped and running handlers are cancelled; the broker redelivers all of them (at least
once). The supervisor reconnects and starts every route again — channels, QoS, declares,
consumers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio
from prometheus_client.metrics_core import Metric

from ... import _settings
from ...amqp import (
    AMQPConnectionError,
    AMQPError,
    BasicProperties,
    Channel,
    ChannelClosedError,
    Connection,
    ConnectionClosedError,
    Consumer,
    ConsumerCancelledError,
    NotFoundError,
    connect,
    parse_url,
)
from ...amqp._rpc import RpcClient
from ...codecs import Codec, get_codec
from ...pipeline._actions import Actions
from ...pipeline._backend import Health
from ...pipeline._backoff import backoff_delay
from ...pipeline._batcher import Batcher
from ...pipeline._handlers import Handler, adapt, handler_name
from ._acks import AckTracker
from ._message import Message
from ._metrics import amqp_families
from ._route_stats import RouteStats
from ._rpc_route import rpc_handler, typed_consume_handler

if TYPE_CHECKING:
    from ...pipeline import AppServices

log = logging.getLogger("trioworker.amqp")

DEFAULT_CONNECTION = "default"


@dataclasses.dataclass(eq=False)
class AMQPRoute:
    """A registered ``@app.amqp.consume`` route: its configuration, and its counters.

    ``stats`` lives here rather than on a connection's run of the route, so the numbers
    ``app.metrics`` exports keep counting across reconnects.
    """

    handler: Handler
    queues: tuple[str, ...]
    bulk_size: int
    flush_interval: float
    on_success: Actions
    on_exception: Actions
    concurrency: int
    prefetch: int
    connection: str
    vhost: str | None
    declare: bool
    timeout: float | None
    name: str
    stats: RouteStats = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stats = RouteStats(self.queues)

    @property
    def effective_bulk_size(self) -> int:
        """``min(bulk_size, prefetch)``: a bulk larger than the prefetch could never fill."""
        return max(1, min(self.bulk_size, self.prefetch))


class _RouteRun:
    """One route running on one connection, for as long as that connection lives."""

    def __init__(self, route: AMQPRoute, connection: Connection) -> None:
        self.route = route
        self.connection = connection
        self.trackers: list[AckTracker] = []
        self.channels: list[Channel] = []
        self.consumers: list[tuple[Channel, str]] = []
        #: queue -> consumer tag, for the queues consumed right now (health, metrics).
        self.consuming: dict[str, str] = {}
        self._stopping = False
        self.batcher: Batcher[Message] = Batcher(
            adapt(route.handler, timeout=route.timeout),
            bulk_size=route.effective_bulk_size,
            flush_interval=route.flush_interval,
            concurrency=route.concurrency,
            on_done=self._on_done,
            on_unhandled=self._on_unhandled,
            stats=route.stats.batcher,
        )
        self._done = trio.Event()

    # ----------------------------------------------------------- decisions

    def _on_done(self, bulk: list[Message], error: BaseException | None) -> None:
        route = self.route
        if error is not None:
            log.error(
                "handler of route %r failed on a bulk of %d: %r",
                route.name,
                len(bulk),
                error,
                exc_info=error,
            )
            default = route.on_exception
        else:
            default = route.on_success
        _settle(bulk, default, route.stats)

    def _on_unhandled(self, bulk: list[Message]) -> None:
        # Not handled (shutdown, cancelled handler): back to the queue, as if never taken.
        for message in bulk:
            message._decision = None
        _settle(bulk, Actions.REQUEUE, self.route.stats)

    # ------------------------------------------------------------- running

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.batcher.run)
                for queue in self.route.queues:
                    nursery.start_soon(self._consume, queue)
        finally:
            self._done.set()

    async def _consume(self, queue: str) -> None:
        """Consume one queue on its own channel; re-subscribe after broker cancels."""
        route = self.route
        attempt = 0
        while not self._stopping:
            channel: Channel | None = None
            try:
                channel = await self.connection.open_channel()
                self.channels.append(channel)
                await channel.basic_qos(prefetch_count=route.prefetch)
                if route.declare:
                    await channel.queue_declare(queue, durable=True)
                tracker = AckTracker(channel)
                self.trackers.append(tracker)
                while not self._stopping:
                    consumer = await channel.basic_consume(queue)
                    self.consumers.append((channel, consumer.consumer_tag))
                    log.info("route %r consuming queue %r", route.name, queue)
                    attempt = 0  # subscribed: the next failure starts the backoff over
                    self.consuming[queue] = consumer.consumer_tag
                    try:
                        await self._pump(consumer, tracker, queue)
                        return  # cancelled by us: shutdown
                    except ConsumerCancelledError:
                        self.consuming.pop(queue, None)
                        log.warning(
                            "route %r: the broker cancelled the consumer of queue %r (deleted?);"
                            " re-subscribing",
                            route.name,
                            queue,
                        )
                    await trio.sleep(backoff_delay(attempt))
                    attempt += 1
            except NotFoundError as exc:
                delay = backoff_delay(attempt, cap=30.0)
                log.error(
                    "route %r: queue %r does not exist (%s); retrying in %.1f s "
                    "(declare=True would create it)",
                    route.name,
                    queue,
                    exc.reply_text,
                    delay,
                )
            except ChannelClosedError as exc:
                delay = backoff_delay(attempt, cap=30.0)
                log.error(
                    "route %r: channel for queue %r closed by the broker: %s; retrying in %.1f s",
                    route.name,
                    queue,
                    exc,
                    delay,
                )
            except AMQPConnectionError:
                return  # the supervisor reconnects and starts us again
            finally:
                if channel is None or channel.is_closed:
                    self.consuming.pop(queue, None)
            if self._stopping or self.connection.is_closed:
                return
            await trio.sleep(delay)
            attempt += 1

    async def _pump(self, consumer: Consumer, tracker: AckTracker, queue: str) -> None:
        batcher = self.batcher
        track = tracker.track
        put = batcher.put
        counters = self.route.stats.queue(queue)
        async for batch in consumer.batches():
            counters.received += len(batch)  # per batch, not per message: the hot path
            for delivery in batch:
                track(delivery.delivery_tag)
                put(Message(delivery, queue, tracker))

    # ---------------------------------------------------------------- stop

    async def stop(self, grace_period: float) -> None:
        """Graceful stop: no new deliveries, requeue the buffered, let handlers finish.

        Order matters. The consumers are cancelled first: requeueing while a consumer is
        still active would let the broker hand the same messages straight back to this
        stopping worker (each round trip a redelivery, counted against a quorum queue's
        delivery limit). Then the batcher closes, so nothing new starts, and what is
        buffered — including deliveries that arrived before the CancelOk — goes back to the
        queue. Running handler calls get ``grace_period`` seconds; past that they are
        cancelled and their messages requeued. Decisions are sent before the channels close.
        """
        self._stopping = True
        with trio.move_on_after(min(grace_period, 5.0)):
            for channel, tag in self.consumers:
                try:
                    await channel.basic_cancel(tag)
                except AMQPError:
                    pass  # the channel is gone: its deliveries are redelivered anyway
        self.batcher.close()
        with trio.move_on_after(grace_period) as scope:
            await self.batcher.wait_idle()
        if scope.cancelled_caught:
            log.warning(
                "route %r: handlers still running after the %.1f s grace period: cancelled, "
                "their messages are requeued",
                self.route.name,
                grace_period,
            )

    async def close_channels(self) -> None:
        for tracker in self.trackers:
            tracker.flush()
        with trio.move_on_after(5.0):
            for channel in self.channels:
                with contextlib.suppress(AMQPError):
                    await channel.close()


def _settle(bulk: list[Message], default: Actions, stats: RouteStats) -> None:
    """Send each message's decision (its own, else ``default``) to its channel's tracker,
    and count them per queue.

    Counting stays off the per-message path: a message taking the default only lands in
    its group's list; the few with their own decision are also kept aside, so each group is
    counted with one subtraction. Decisions for a channel that is gone were not sent (the
    broker redelivers those messages): they count as ``dropped``, not as acks.
    """
    by_tracker: dict[int, tuple[AckTracker, list[tuple[int, Actions]], str, list[Actions]]] = {}
    for message in bulk:
        tracker = message._tracker
        if tracker is None:
            continue
        entry = by_tracker.get(id(tracker))
        if entry is None:
            entry = by_tracker[id(tracker)] = (tracker, [], message.queue, [])
        decision = message._decision
        if decision is None:
            decision = default
        else:
            entry[3].append(decision)
        entry[1].append((message.delivery_tag, decision))
    for tracker, decisions, queue, own in by_tracker.values():
        tracker.decide_many(decisions)
        counters = stats.queue(queue)
        if tracker.channel.is_closed:
            counters.dropped += len(decisions)
            continue
        counters.count(default, len(decisions) - len(own))
        for action in own:
            counters.count(action)


class _Supervisor:
    """Keeps one connection up: connect, run the routes, reconnect with backoff."""

    def __init__(self, backend: AMQPBackend, key: tuple[str, str | None], url: str) -> None:
        self.backend = backend
        self.key = key
        self.url = url
        self.routes: list[AMQPRoute] = []
        self.connection: Connection | None = None
        self.connected = trio.Event()
        self.reconnects = 0
        self._runs: list[_RouteRun] = []
        self._route_nursery: trio.Nursery | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._publisher: Channel | None = None
        self._publisher_lock = trio.Lock()
        self._rpc: RpcClient | None = None
        self._rpc_lock = trio.Lock()
        self.reset()

    def reset(self) -> None:
        """Set up the per-serve state: a stopped supervisor runs again when the app is
        served once more."""
        self._stopping = False
        self._stopped = trio.Event()
        # Set once the first connection attempt has succeeded or failed: the app reports
        # itself started only then, so `open_app`'s block begins with the connection open
        # (or known to be down, in which case it keeps reconnecting in the background).
        self.first_attempt = trio.Event()
        self._cancel_scope = trio.CancelScope()

    @property
    def name(self) -> str:
        name, vhost = self.key
        return name if vhost is None else f"{name}/{vhost}"

    def add_route(self, route: AMQPRoute) -> None:
        self.routes.append(route)
        if (
            self._route_nursery is not None
            and self.connection is not None
            and not self.backend._routes_stop.is_set()
        ):
            self._start_route(route, self.connection)

    def _start_route(self, route: AMQPRoute, connection: Connection) -> None:
        assert self._route_nursery is not None
        run = _RouteRun(route, connection)
        self._runs.append(run)
        self._route_nursery.start_soon(run.run)

    async def run(self) -> None:
        attempt = 0
        app_name = self.backend.app.name
        with self._cancel_scope:
            while not self._stopping:
                try:
                    async with connect(self.url, connection_name=f"{app_name}:{self.name}") as conn:
                        attempt = 0
                        await self._serve(conn)
                except AMQPConnectionError as exc:
                    self.first_attempt.set()
                    if self._stopping:
                        break
                    self.reconnects += 1
                    delay = backoff_delay(attempt)
                    attempt += 1
                    log.warning(
                        "AMQP connection %r lost or refused (%s); reconnecting in %.2f s",
                        self.name,
                        exc,
                        delay,
                    )
                    await trio.sleep(delay)
        self.first_attempt.set()
        self._stopped.set()

    async def _serve(self, conn: Connection) -> None:
        self.connection = conn
        self._runs = []
        self._publisher = None
        log.info("AMQP connection %r open (%s)", self.name, conn.params.safe_url())
        try:
            async with trio.open_nursery() as nursery:
                self._conn_nursery = nursery  # the connection's own tasks (RPC replies)
                nursery.start_soon(self._watch, conn, nursery.cancel_scope)
                if self._stopping:
                    nursery.cancel_scope.cancel()
                async with trio.open_nursery() as routes:
                    self._route_nursery = routes
                    if not self.backend._routes_stop.is_set():
                        for route in self.routes:
                            self._start_route(route, conn)
                    self.connected.set()
                    self.first_attempt.set()
                    # Graceful: stop every route when asked ...
                    await self.backend._routes_stop.wait()
                    await self._stop_runs()
                self._route_nursery = None
                # ... then keep the connection for publishers and callers (handlers of
                # other backends still draining) until the app is done with it, and
                # leave: the connection closes politely.
                await self._stop_requested()
                nursery.cancel_scope.cancel()
        finally:
            self._route_nursery = None
            self._conn_nursery = None
            self.connection = None
            self._publisher = None
            self._rpc = None
            if self.connected.is_set():
                self.connected = trio.Event()
        conn._raise_if_closed()  # a lost connection: reconnect (raises AMQPConnectionError)

    async def _watch(self, conn: Connection, scope: trio.CancelScope) -> None:
        with contextlib.suppress(AMQPConnectionError):
            await conn.wait_closed()
        scope.cancel()

    async def _stop_requested(self) -> None:
        await self.backend._stop_event.wait()

    async def _stop_runs(self) -> None:
        grace = self.backend.app.grace_period
        async with trio.open_nursery() as nursery:
            for run in self._runs:
                nursery.start_soon(run.stop, grace)
        # Handlers past the grace period are cancelled by leaving the route nursery; their
        # messages are requeued by the batcher. Then decisions go out and channels close.
        for run in self._runs:
            run.batcher.close()
        if self._route_nursery is not None:
            # cancel the route runs (and any handler still running past the grace period)
            self._route_nursery.cancel_scope.cancel()
            for run in self._runs:
                with trio.CancelScope(shield=True):
                    await run._done.wait()
        for run in self._runs:
            with trio.CancelScope(shield=True):
                await run.close_channels()

    async def publisher(self) -> Channel:
        """The connection's publishing channel (confirm mode), opened on first use."""
        while True:
            conn = self.connection
            if conn is None or conn.is_closed:
                await self.connected.wait()
                continue
            async with self._publisher_lock:
                channel = self._publisher
                if channel is None or channel.is_closed:
                    channel = await conn.open_channel()
                    await channel.confirm_select()
                    self._publisher = channel
                return channel

    async def rpc_client(self) -> RpcClient:
        """The connection's RPC client (direct reply-to), started on first use."""
        while True:
            conn = self.connection
            nursery = self._conn_nursery
            if conn is None or conn.is_closed or nursery is None:
                await self.connected.wait()
                continue
            async with self._rpc_lock:
                client = self._rpc
                if client is None or client.channel.is_closed:
                    client = RpcClient(await conn.open_channel())
                    await nursery.start(client._read_replies)
                    self._rpc = client
                return client


class AMQPBackend:
    """``app.amqp``: register routes, publish, manage connections."""

    name = "amqp"

    def __init__(self, app: AppServices, url: str, prefetch: int) -> None:
        self.app = app
        self.url = url
        self.prefetch = prefetch
        self._connections: dict[str, str] = {DEFAULT_CONNECTION: url}
        self._supervisors: dict[tuple[str, str | None], _Supervisor] = {}
        self.routes: list[AMQPRoute] = []
        self._nursery: trio.Nursery | None = None
        self._stop_event = trio.Event()
        self._routes_stop = trio.Event()

    # ------------------------------------------------------------ settings

    def add_connection(self, name: str, url: str) -> None:
        """Name another broker (or the same with other credentials) for routes to use."""
        parse_url(url)  # fail now, not at startup
        if name in self._connections and self._connections[name] != url:
            raise ValueError(f"connection {name!r} is already defined")
        self._connections[name] = url

    def _url_for(self, connection: str, vhost: str | None) -> str:
        try:
            url = self._connections[connection]
        except KeyError:
            raise ValueError(
                f"unknown AMQP connection {connection!r}; add it with "
                f"app.amqp.add_connection({connection!r}, url)"
            ) from None
        if vhost is None:
            return url
        parts = url.split("?", 1)
        base = parts[0]
        scheme, rest = base.split("://", 1)
        authority = rest.split("/", 1)[0]
        new = f"{scheme}://{authority}/{quote(vhost, safe='')}"
        return new if len(parts) == 1 else f"{new}?{parts[1]}"

    def _supervisor(self, connection: str, vhost: str | None) -> _Supervisor:
        key = (connection, vhost)
        sup = self._supervisors.get(key)
        if sup is None:
            sup = _Supervisor(self, key, self._url_for(connection, vhost))
            self._supervisors[key] = sup
            if self._nursery is not None:
                self._nursery.start_soon(sup.run)
        return sup

    # -------------------------------------------------------------- routes

    def consume(
        self,
        queues: str | Sequence[str],
        *,
        bulk_size: int = 1,
        flush_interval: float | None = None,
        on_success: Actions = Actions.ACK,
        on_exception: Actions = Actions.REQUEUE,
        concurrency: int = 1,
        prefetch: int | None = None,
        vhost: str | None = None,
        connection: str = DEFAULT_CONNECTION,
        declare: bool = False,
        timeout: float | None = None,
        name: str | None = None,
        codec: str | Codec = "json",
    ) -> Callable[[Handler], Handler]:
        """Register a handler for one or more queues; it receives ``list[Message]``.

        A handler whose parameter is annotated ``list[Model]`` (a dataclass or a pydantic
        model) receives the bodies decoded with ``codec`` (or the codec the message's
        ``content_type``/``content_encoding`` name) and validated; see docs/rpc.md.
        See docs/amqp.md for every option. The handler is returned unchanged, so it can
        still be called directly in tests.
        """
        get_codec(codec)  # an unknown codec fails at registration
        queue_list = (queues,) if isinstance(queues, str) else tuple(queues)
        if not queue_list:
            raise ValueError("consume() needs at least one queue")
        if not isinstance(on_success, Actions) or not isinstance(on_exception, Actions):
            raise TypeError("on_success and on_exception must be trioworker.Actions members")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url_for(connection, vhost)  # unknown connection: fail at registration

        def register(handler: Handler) -> Handler:
            route = AMQPRoute(
                handler=typed_consume_handler(handler, codec) or handler,
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
            )
            if route.bulk_size < 1 or route.concurrency < 1 or route.prefetch < 1:
                raise ValueError("bulk_size, concurrency and prefetch must be at least 1")
            self.routes.append(route)
            self._supervisor(connection, vhost).add_route(route)
            return handler

        return register

    def rpc(
        self,
        queue: str,
        *,
        codec: str | Codec = "json",
        concurrency: int = 64,
        timeout: float | None = None,
        prefetch: int | None = None,
        declare: bool = True,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
        name: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register an RPC handler: it receives the request ``Message`` (or, annotated
        with a dataclass/pydantic model, the validated body) and returns the reply value.

        The reply goes to the request's ``reply_to`` through the default exchange with the
        same ``correlation_id``, encoded with ``codec``. The request queue is declared
        (durable) unless ``declare=False``. Requests are handled concurrently, at most
        ``concurrency`` at once, taken in bulks of what is waiting. See docs/rpc.md.
        """
        get_codec(codec)
        self._url_for(connection, vhost)
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")

        def register(handler: Handler) -> Handler:
            route = AMQPRoute(
                handler=rpc_handler(handler, codec, timeout, concurrency=concurrency),
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
            self.routes.append(route)
            self._supervisor(connection, vhost).add_route(route)
            return handler

        return register

    async def call(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the documented API
        codec: str | Codec | None = None,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
    ) -> Any:
        """Call the RPC route on ``queue`` and return its decoded reply.

        Raises :class:`trioworker.RemoteError` (``type``, ``message``) if the remote
        handler raised, ``TimeoutError`` after ``timeout`` seconds, and
        :class:`~trioworker.amqp.NoRouteError` if no queue takes the request. Uses direct
        reply-to: no reply queue is declared; concurrent calls share one channel.
        """
        if self._nursery is None:
            raise RuntimeError("app.amqp.call() needs a running app (serve() or open_app())")
        client = await self._supervisor(connection, vhost).rpc_client()
        return await client.call(queue, payload, timeout=timeout, codec=codec)

    # ------------------------------------------------------------- publish

    async def publish(
        self,
        body: bytes | str | dict[str, Any] | list[Any],
        *,
        routing_key: str,
        exchange: str = "",
        properties: BasicProperties | None = None,
        mandatory: bool = False,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
    ) -> None:
        """Publish with publisher confirms; return once the broker took responsibility.

        ``str`` bodies are UTF-8 encoded; ``dict``/``list`` bodies are JSON-encoded with
        ``content_type`` ``application/json``. Raises :class:`~trioworker.amqp.PublishError`
        if the broker nacks it or (``mandatory=True``) cannot route it. While the
        connection is down, waits for it to come back. The app must be running.
        """
        if self._nursery is None:
            raise RuntimeError("app.amqp.publish() needs a running app (serve() or open_app())")
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            if properties is None:
                properties = BasicProperties(content_type="application/json")
        elif isinstance(body, str):
            body = body.encode()
        sup = self._supervisor(connection, vhost)
        channel = await sup.publisher()
        await channel.basic_publish(
            body,
            routing_key=routing_key,
            exchange=exchange,
            properties=properties,
            mandatory=mandatory,
        )

    # ----------------------------------------------------------- lifecycle

    @property
    def supervisors(self) -> Iterable[_Supervisor]:
        return self._supervisors.values()

    @property
    def active(self) -> bool:
        """Always: even without routes, the app publishes and calls through it."""
        return True

    def collect(self) -> Iterator[Metric]:
        """This backend's metric families, for ``app.metrics`` (a :data:`MetricsSource`)."""
        return amqp_families(self)

    def health(self) -> Health:
        """Healthy when every connection is open and every route consumes all its queues."""
        problems: list[str] = []
        for sup in self._supervisors.values():
            if sup.connection is None or sup.connection.is_closed:
                problems.append(f"connection {sup.name!r} is down")
                continue
            for run in sup._runs:
                consuming = set(run.consuming)
                missing = [q for q in run.route.queues if q not in consuming]
                if missing and not run._stopping:
                    problems.append(f"route {run.route.name!r} is not consuming {missing}")
        return Health(not problems, "; ".join(problems))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every connection until :meth:`stop` has drained them all."""
        self._stop_event = trio.Event()
        self._routes_stop = trio.Event()
        for sup in self._supervisors.values():
            sup.reset()
        async with trio.open_nursery() as nursery:
            if not self._supervisors and getattr(self.app, "_publishing_wanted", True):
                self._supervisor(DEFAULT_CONNECTION, None)
            self._nursery = nursery  # from now on, new supervisors start at once
            for sup in list(self._supervisors.values()):
                nursery.start_soon(sup.run)
            for sup in list(self._supervisors.values()):
                await sup.first_attempt.wait()
            task_status.started()
        self._nursery = None

    def stop_consuming(self) -> None:
        """Begin the graceful stop of every route (see :meth:`_RouteRun.stop`), keeping the
        connections open for publishing and calls until :meth:`stop`.

        The app calls this first at shutdown, so that HTTP requests, SSE handlers and
        timer runs finishing in their grace period can still publish.
        """
        self._routes_stop.set()

    def stop(self) -> None:
        """Stop every route (if not yet stopping) and then close every connection."""
        self._routes_stop.set()
        self._stop_event.set()
        for sup in self._supervisors.values():
            sup._stopping = True
            if sup.connection is None:
                sup._cancel_scope.cancel()  # waiting to reconnect: just stop


__all__ = [
    "DEFAULT_CONNECTION",
    "AMQPBackend",
    "AMQPRoute",
    "ConnectionClosedError",
    "backoff_delay",
]
