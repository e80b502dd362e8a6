"""``TestClient``: run the real app against a broker for the length of a test.

::

    async with TestClient(app) as client:            # a fresh in-memory broker
        await client.publish({"qty": 0}, routing_key="orders")
        await client.drain()
        assert [m.json() for m in client.queue("orders.dlq").messages] == [{"qty": 0}]

    async with TestClient(app, broker="amqp://guest:guest@127.0.0.1:5672/%2F") as client:
        ...                                           # the same test, on RabbitMQ

Nothing of the app is replaced: its hooks, routes, batchers, decisions, retries, RPC
routes, timers and HTTP routes run as in production, through ``open_app``. What the client
changes, and puts back when the block ends: every AMQP connection of the app goes to the
test's broker (``app.amqp.redirect``), the HTTP backend binds no socket (``client.http``
calls its ASGI app in-process) and SSE streams are read from the client's feeds
(``client.sse(url)``). See docs/testing.md.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import httpx
import trio
import trio.testing

from .. import open_app
from ..amqp import BasicProperties, parse_url
from ..backends.amqp._declare import declare_topology
from ..backends.amqp._registration import vhost_url
from ..backends.amqp._topology import Exchange, Queue
from ..codecs import Codec
from ._app_setup import http_client, redirected
from ._broker import MemoryBroker
from ._broker._registry import lookup
from ._clock import advance_clock
from ._connection import ClientConnection
from ._drain import DrainTimeout, drain_memory, drain_polling, watched_queues
from ._messages import encode_message
from ._published import OwnPublishes
from ._queues import QueuedMessage, QueueInspector
from ._replies import call_watched
from ._sse import SSEFeed, SSEFeeds
from ._websocket import TestWebSocket, open_websocket, websocket_scope

if TYPE_CHECKING:
    from .. import App

__all__ = ["TestClient"]


class TestClient:
    """Runs ``app`` for the duration of an ``async with`` block (see the module docstring).

    Arguments:
        app: the app under test (not running).
        broker: ``None`` — a fresh :class:`MemoryBroker` the client runs (no network);
            a ``MemoryBroker`` you run yourself (the ``memory_broker`` fixture); or an
            ``amqp://`` URL — a real RabbitMQ (what the parity suite checks against).
        drain_timeout: the default ``timeout`` of :meth:`drain`.
        bind_http: serve the HTTP routes on a real socket (at ``app.http``'s host and
            port; 0 picks a free one) instead of in-process; ``client.http`` then talks
            to it over TCP (for WebSockets, say).

    An exception the app raises (a startup hook failing, a backend crashing) comes out of
    the ``async with``; so does the test's own, unwrapped.
    """

    __test__ = False  # not a test class for pytest, whatever a test module imports it as

    def __init__(
        self,
        app: App,
        broker: str | MemoryBroker | None = None,
        *,
        drain_timeout: float | None = 10.0,
        bind_http: bool = False,
    ) -> None:
        if isinstance(broker, str):
            parse_url(broker)  # a bad URL fails here, with its password hidden
        self.app = app
        self.drain_timeout = drain_timeout
        self._broker_arg = broker
        self._bind_http = bind_http
        self._memory: MemoryBroker | None = None
        self._connection: ClientConnection | None = None
        self._session: AbstractAsyncContextManager[TestClient] | None = None
        self._feeds = SSEFeeds()
        self._vhost = parse_url(app.amqp.url).virtual_host
        self._published = OwnPublishes(None, self._vhost)
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        where = "memory" if not isinstance(self._broker_arg, str) else "rabbitmq"
        return f"<TestClient app={self.app.name!r} broker={where}>"

    # ----------------------------------------------------------- lifecycle

    async def __aenter__(self) -> TestClient:
        if self._session is not None:
            raise RuntimeError("this TestClient is already running")
        session = self._run()
        await session.__aenter__()
        self._session = session
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        session, self._session = self._session, None
        assert session is not None
        return await session.__aexit__(*exc_info)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[TestClient]:
        error: BaseException | None = None
        self._feeds = SSEFeeds()  # what a previous block sent and nobody read is gone
        async with trio.open_nursery() as nursery:
            stop_broker = trio.Event()
            try:
                target = await self._start_broker(nursery, stop_broker)
                self._connection = ClientConnection(vhost_url(target, self._vhost), nursery)
                with redirected(self.app, target, self._memory, self._bind_http, self._feeds):
                    async with open_app(self.app):
                        try:
                            async with http_client(self.app, self._bind_http) as http:
                                self._http = http
                                yield self
                        finally:
                            self._http = None
                            self._connection.close()
            except BaseException as exc:
                error = exc  # raised below, out of the nursery: not in an ExceptionGroup
            finally:
                if self._connection is not None:
                    self._connection.close()
                stop_broker.set()
        if error is not None:
            raise _unwrapped(error)

    async def _start_broker(self, nursery: trio.Nursery, stop: trio.Event) -> str:
        """The URL the app is sent to, the memory broker running if it is the client's."""
        broker = self._broker_arg
        if isinstance(broker, str):
            return broker
        if broker is None:
            broker = MemoryBroker()
            await nursery.start(_run_memory_broker, broker, stop)
        elif lookup(broker.name) is not broker:
            # Else the app, finding no broker at its memory:// URL, would run one of its own.
            raise RuntimeError(
                f"{broker!r} is not running: run it (`async with broker.running():`) around "
                "the TestClient, or let the client run its own (broker=None)"
            )
        self._memory = broker
        self._published = OwnPublishes(broker, self._vhost)
        return broker.url

    # ------------------------------------------------------------ the broker

    @property
    def broker(self) -> MemoryBroker | None:
        """The memory broker the app runs on (``None`` on RabbitMQ)."""
        return self._memory

    def _client_connection(self) -> ClientConnection:
        if self._connection is None or self._session is None:
            raise RuntimeError("use the TestClient inside `async with TestClient(app) as client:`")
        return self._connection

    async def publish(
        self,
        body: Any,
        routing_key: str = "",
        exchange: str = "",
        *,
        properties: BasicProperties | None = None,
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
        ttl: float | None = None,
        priority: int | None = None,
        codec: str | Codec | None = None,
        mandatory: bool = False,
        timeout: float | None = 10.0,  # noqa: ASYNC109 - as app.amqp.publish
    ) -> None:
        """Publish as a producer would, and wait for the broker's confirm.

        The body is encoded like ``app.amqp.publish`` does (``bytes`` as is, ``str``
        UTF-8, ``dict``/``list`` JSON) and any other value as JSON. Raises
        :class:`~trioworker.amqp.MessageReturnedError` for a ``mandatory`` message no
        queue takes, :class:`~trioworker.amqp.PublishNackedError` if the broker refuses it.
        """
        encoded, props = encode_message(
            body,
            properties=properties,
            codec=codec,
            persistent=persistent,
            headers=headers,
            ttl=ttl,
            priority=priority,
        )
        connection = self._client_connection()
        with trio.fail_after(math.inf if timeout is None else timeout):
            channel = await connection.publish_channel()
            with self._published.marking(
                lambda m: (m.body, m.routing_key) == (encoded, routing_key)
            ):
                confirmation = await channel.publish(
                    encoded,
                    routing_key=routing_key,
                    exchange=exchange,
                    properties=props,
                    mandatory=mandatory,
                )
                await confirmation.wait()

    async def call(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = 10.0,  # noqa: ASYNC109 - as app.amqp.call
        codec: str | Codec | None = None,
    ) -> Any:
        """Call the RPC route on ``queue`` and return its reply, as ``app.amqp.call``.

        Raises :class:`~trioworker.RemoteError` if the handler raised,
        :class:`~trioworker.amqp.NoRouteError` if no queue takes the request, and
        :class:`NoReplyError` as soon as the app is idle with no reply sent — the request
        was taken by a route that does not reply (a plain consume route, a handler that
        rejected it) or sits in a queue nothing consumes — instead of waiting out
        ``timeout``. Waiting lets time pass as :meth:`drain` does.
        """
        rpc = await self._client_connection().rpc_client()
        consumed = any(queue in r.queues for r in self.app.amqp.routes)

        def ours(message: QueuedMessage) -> bool:
            return message.routing_key == queue and message.properties.reply_to is not None

        with self._published.marking(ours):
            return await call_watched(
                rpc,
                queue,
                payload,
                timeout=timeout,
                codec=codec,
                idle=lambda: self._wait_idle(None),
                exact=self._memory is not None,
                watch=self._memory is not None or consumed,
                describe=self._published.request_fate,
            )

    @property
    def published(self) -> list[QueuedMessage]:
        """Every message the app published, in order (RPC replies, retry and dead-letter
        copies included; the client's own publishes and calls left out). Memory broker
        only: RabbitMQ shows no client what others publish."""
        return self._published.by_others()

    async def declare(self, *topology: Queue | Exchange) -> None:
        """Set the stage: declare queues (with their bindings, exchanges and dead-letter
        queue, as a route with ``declare=True`` does) and exchanges the app does not
        declare itself — a queue only the test reads, one whose messages expire."""
        async with self._client_connection().channel() as channel:
            for item in topology:
                if isinstance(item, Queue):
                    await declare_topology(channel, item, self._vhost)
                elif isinstance(item, Exchange):
                    await channel.exchange_declare(
                        item.name,
                        item.type,
                        durable=item.durable,
                        auto_delete=item.auto_delete,
                        internal=item.internal,
                        arguments=item.arguments,
                    )
                else:
                    raise TypeError(f"declare() takes Queue and Exchange objects, not {item!r}")

    def queue(self, name: str) -> QueueInspector:
        """The queue ``name`` of the app's vhost (see :class:`QueueInspector`)."""
        if self._memory is not None:
            return QueueInspector(name, vhost=self._vhost, memory=self._memory)
        return QueueInspector(name, vhost=self._vhost, channel=self._client_connection().channel)

    # ------------------------------------------------------------- waiting

    async def drain(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole wait
        *,
        queues: Sequence[str] = (),
    ) -> None:
        """Wait until every route is idle, nothing is in flight and no timer runs.

        On the memory broker, bulks waiting for their ``flush_interval`` are handed over
        at once and pending message TTLs (retry delays, ``expiration``) are skipped; on
        RabbitMQ drain waits for them for real, watching the queues the app consumes and
        their retry delay queues — and ``queues``: others to wait for until they are empty
        (one whose messages expire into a queue the app consumes). Raises
        :class:`DrainTimeout` with what is still busy after ``timeout`` real seconds
        (``None``: the client's ``drain_timeout``; ``math.inf``: no limit), whatever trio's
        clock.
        """
        await self._wait_idle(self.drain_timeout if timeout is None else timeout, queues)

    async def _wait_idle(
        self,
        timeout: float | None,  # noqa: ASYNC109 - the drain's deadline, passed on
        queues: Sequence[str] = (),
    ) -> None:
        if self._memory is not None:
            await drain_memory(self.app, self._memory, self._feeds, timeout=timeout)
            # What expired out of ``queues`` was fast-forwarded: they are empty now, unless
            # nothing ever takes their messages (then RabbitMQ would wait forever too).
            for name in queues:
                if await self.queue(name).count():
                    raise DrainTimeout(f"drain(): queue {name!r} still holds messages")
        else:

            async def activity() -> list[str]:
                return await self._rabbitmq_activity(queues)

            await drain_polling(self.app, activity, self._feeds, timeout=timeout)

    async def _rabbitmq_activity(self, extra: Sequence[str]) -> list[str]:
        """Ready messages in the queues the app consumes, their retry delay queues and
        ``extra``."""
        busy = []
        for name in dict.fromkeys([*watched_queues(self.app), *extra]):
            try:
                ready = await self.queue(name).count()
            except KeyError:
                continue  # not declared (yet): nothing waits in it
            if ready:
                busy.append(f"queue {name!r} has {ready} ready message(s)")
        return busy

    async def advance(self, seconds: float) -> None:
        """Move trio's clock ``seconds`` ahead, deadline by deadline, letting every task
        due run at its time (a timer ticking every second runs 5 times in 5 s).

        Needs a :class:`trio.testing.MockClock` (pytest-trio's ``mock_clock`` fixture);
        raises ``RuntimeError`` on the real clock, which no test can move.
        """
        await advance_clock(seconds)

    # ---------------------------------------------------------- HTTP and SSE

    @property
    def http(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` on the app's HTTP routes (``/health`` and ``/metrics``
        too); in-process unless ``bind_http=True``. Relative URLs: ``client.http.get("/x")``."""
        if self._http is None:
            raise RuntimeError("client.http exists inside `async with TestClient(app)` only")
        return self._http

    def websocket(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
    ) -> AbstractAsyncContextManager[TestWebSocket]:
        """``async with client.websocket("/ws/7?x=1") as ws:`` a WebSocket connection to the
        app's route, in-process (no socket; docs/testing.md). A refused handshake raises
        :class:`WebSocketRejected`; leaving the block closes the connection (1000) and waits
        up to ``drain_timeout`` for the handler to end."""
        if self._http is None:
            raise RuntimeError("client.websocket works inside `async with TestClient(app)` only")
        scope = websocket_scope(path, headers, subprotocols)
        asgi = cast("Any", self.app.http.asgi)  # ASGI 3 with plain dicts
        limit = math.inf if self.drain_timeout is None else self.drain_timeout
        return open_websocket(asgi, scope, end_timeout=limit)

    def sse(self, url: str) -> SSEFeed:
        """The event stream served to the app's ``@app.sse.consume(url)`` route:
        ``client.sse(url).send("data", event="...", id="...")``."""
        return self._feeds.feed(url)


async def _run_memory_broker(
    broker: MemoryBroker, stop: trio.Event, task_status: trio.TaskStatus[None]
) -> None:
    async with broker.running():
        task_status.started()
        await stop.wait()


def _unwrapped(error: BaseException) -> BaseException:
    """A group around one exception (the app's nursery, the client's) as that exception."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
