"""One broker connection (a URL — or the URLs of one cluster — and a vhost), kept up for as
long as the app runs.

The supervisor connects, starts a :class:`RouteRun` of every route on the connection, and
on connection loss — broker restart, ``rabbitmqctl close_all_connections``, a network cut,
missed heartbeats, the node killed — reconnects and starts every route again (channels,
QoS, declares, consumers). With several URLs it fails over to the next node at once and
backs off (exponentially, with jitter) only after a full round of failures
(:class:`~._failover.Failover`, docs/cluster.md). Its :class:`Publisher` publishes on a
connection of its own (:class:`PublishConnection`, opened on first use, on the same nodes),
so a broker that blocks publishers during an alarm never stops the consumers' acks.

Stopping takes two steps, driven by the backend: :meth:`Supervisor.stop_consuming` stops
the routes gracefully and keeps the connection open for publishers and callers (handlers of
other backends still draining); :meth:`Supervisor.stop` then closes it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import trio

from ..._errors import StartupError
from ..._log_context import bind, log_context
from ...amqp import (
    AMQPConnectionError,
    AuthenticationError,
    Connection,
    TLSError,
    VirtualHostError,
    connect,
)
from ._failover import Failover
from ._publish_connection import PublishConnection
from ._publisher import Publisher
from ._route_run import RouteRun
from ._routes import AMQPRoute

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

    from ...pipeline import AppServices

__all__ = ["Supervisor"]

log = logging.getLogger("trioworker.amqp")


class Supervisor:
    """Keeps one connection up: connect, run the routes, reconnect with backoff."""

    def __init__(
        self,
        app: AppServices,
        key: tuple[str, str | None],
        urls: Sequence[str],
        *,
        shuffle: bool = False,
    ) -> None:
        self._app = app
        self.key = key
        # The order the nodes are tried in, drawn once (shuffled if asked) and shared by
        # the publishing connection: both start on the same node.
        self._order = Failover(urls, shuffle=shuffle).urls
        self.failover = Failover(self._order)
        #: The TLS context of ``connect()`` (``App(ssl_context=)``, ``add_connection``).
        self.ssl_context: ssl.SSLContext | None = None
        self.routes: list[AMQPRoute] = []
        #: The open connection, or ``None`` while connecting or reconnecting.
        self.connection: Connection | None = None
        #: Set while a connection is open (replaced by a new event when it is lost).
        self.connected = trio.Event()
        #: Connections lost or refused so far, each followed by a reconnect attempt.
        self.reconnects = 0
        #: The last reason a connect failed or the connection was lost (for errors).
        self.last_error: AMQPConnectionError | None = None
        self.publisher = Publisher(self.name)
        self.publishing = PublishConnection(self.publisher, self.name, self._order)
        self._runs: list[RouteRun] = []
        self._route_nursery: trio.Nursery | None = None
        self.reset()

    def reset(self) -> None:
        """Set up the per-serve state: a stopped supervisor runs again when the app is
        served once more."""
        self._stopping = False
        self._consuming_stopped = trio.Event()
        self._stop_requested = trio.Event()
        # Set once the first connection attempt has succeeded or failed: the app reports
        # itself started only then, so `open_app`'s block begins with the connection open
        # (or known to be down, in which case it keeps reconnecting in the background).
        self._first_attempt = trio.Event()
        #: Why the first attempt of this serve cannot succeed by retrying (credentials,
        #: vhost, certificate, a 406 on a route's declare): the backend's startup raises it.
        self.startup_error: StartupError | None = None
        self._connected_once = False
        self._cancel_scope = trio.CancelScope()
        self.failover = Failover(self._order)
        self.publishing.reset()

    def use_urls(self, urls: Sequence[str]) -> None:
        """Connect to ``urls`` from now on (``AMQPBackend.redirect``, before a serve)."""
        self._order = tuple(urls)
        self.failover = Failover(self._order)
        self.publishing.use_urls(self._order)

    @property
    def name(self) -> str:
        """The connection's name, with its vhost if the route named one: ``default/audit``."""
        name, vhost = self.key
        return name if vhost is None else f"{name}/{vhost}"

    @property
    def url(self) -> str:
        """The URL connected to, or to be tried next."""
        return self.failover.url

    @property
    def nodes(self) -> tuple[str, ...]:
        """``host:port`` of every node of the connection, in the order they are tried."""
        return self.failover.labels

    @property
    def node(self) -> str | None:
        """``host:port`` of the node connected to; None while down."""
        return self.failover.label if self.up else None

    @property
    def up(self) -> bool:
        """True while the connection is open."""
        return self.connection is not None and not self.connection.is_closed

    def problems(self) -> list[str]:
        """Why this connection does not do its job right now (for ``/health``)."""
        publishing = self.publishing.problems()
        if not self.up:
            tried = f" (every node tried: {', '.join(self.nodes)})" if self.failover.several else ""
            return [f"connection {self.name!r} is down{tried}", *publishing]
        return [problem for run in self._runs for problem in run.problems()] + publishing

    def whereabouts(self) -> str:
        """For ``/health`` of a healthy app: the node of a connection that has several
        (``connection 'default' on 127.0.0.1:5673``); empty for a single URL."""
        if not (self.failover.several and self.up):
            return ""
        where = f"connection {self.name!r} on {self.node}"
        publishing = self.publishing.node
        if publishing is not None and publishing != self.node:
            where += f" (publishing on {publishing})"
        return where

    def runs(self) -> list[RouteRun]:
        """The routes running on the current connection (none while it is down)."""
        return list(self._runs) if self.up else []

    async def wait_first_attempt(self) -> None:
        """Wait until the first connection attempt of this serve succeeded or failed, and,
        if it succeeded, every route tried each of its queues once."""
        await self._first_attempt.wait()
        for run in list(self._runs):
            await run.first_attempt.wait()
        if self.startup_error is None:
            conflicts = [c for run in self._runs for c in run.route.conflicts.values()]
            if conflicts:
                self.startup_error = StartupError("; ".join(map(str, conflicts)))

    async def wait_up(self) -> None:
        """Wait until the connection is open and every route consumes all its queues."""
        # Polled: it runs once, at startup, and keeps the consume path free of events.
        while not (self.up and all(run.consuming_all() for run in self._runs)):  # noqa: ASYNC110
            await trio.sleep(0.05)

    # --------------------------------------------------------------- routes

    def add_route(self, route: AMQPRoute) -> None:
        """Run ``route`` on this connection (at once, if it is up and consuming)."""
        self.routes.append(route)
        if (
            self._route_nursery is not None
            and self.connection is not None
            and not self._consuming_stopped.is_set()
        ):
            self._start_route(route, self.connection)

    def _start_route(self, route: AMQPRoute, connection: Connection) -> None:
        assert self._route_nursery is not None
        run = RouteRun(route, connection)
        self._runs.append(run)
        # The run's log context, whichever task calls this (trio copies it at spawn).
        queue = route.queues[0] if len(route.queues) == 1 else None
        with log_context(app=self._app.name, connection=self.name, route=route.name, queue=queue):
            self._route_nursery.start_soon(run.run)

    # -------------------------------------------------------------- running

    async def run(self) -> None:
        """Connect and reconnect until :meth:`stop`; the publishing connection alongside."""
        bind(app=self._app.name, connection=self.name)  # this task's log lines
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                self.publishing.run,
                f"{self._app.name}:{self.name}:publish",
                self.ssl_context,
            )
            try:
                await self._run_consuming()
            finally:
                self.publishing.stop()

    async def _run_consuming(self) -> None:
        failover = self.failover
        try:
            with self._cancel_scope:
                while not self._stopping:
                    try:
                        async with connect(
                            failover.url,
                            ssl_context=self.ssl_context,
                            connection_name=f"{self._app.name}:{self.name}",
                        ) as conn:
                            failover.opened(trio.current_time())
                            await self._serve(conn)
                    except AMQPConnectionError as exc:
                        self.last_error = exc
                        why = _refusal(exc)
                        if why is not None and not self._connected_once:
                            # Retrying cannot fix it: the app's startup fails with it. A
                            # node that is down is no such refusal: the next one is tried.
                            self.startup_error = self.startup_error or StartupError(why)
                            self._first_attempt.set()
                        node = failover.label
                        delay = failover.failed(trio.current_time())
                        if delay:  # a full round failed: the app starts with it down
                            self._first_attempt.set()
                        if self._stopping:
                            break
                        self.reconnects += 1
                        log.warning(
                            "AMQP connection %r%s lost or refused (%s); %s",
                            self.name,
                            f" to node {node}" if failover.several else "",
                            why or exc,
                            failover.next_step(delay),
                        )
                        await trio.sleep(delay)
        finally:
            self._first_attempt.set()

    async def _serve(self, conn: Connection) -> None:
        self.connection = conn
        self._connected_once = True
        self._runs = []
        log.info(
            "AMQP connection %r open on node %s (%s)",
            self.name,
            self.failover.label,
            conn.params.safe_url(),
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, conn, nursery.cancel_scope)
                if self._stopping:
                    nursery.cancel_scope.cancel()
                async with trio.open_nursery() as routes:
                    self._route_nursery = routes
                    if not self._consuming_stopped.is_set():
                        for route in self.routes:
                            self._start_route(route, conn)
                    self.connected.set()
                    self._first_attempt.set()
                    # Graceful: stop every route when asked ...
                    await self._consuming_stopped.wait()
                    await self._stop_runs()
                self._route_nursery = None
                # ... then keep the connection for publishers and callers (handlers of
                # other backends still draining) until the app is done with it, and
                # leave: the connection closes politely.
                await self._stop_requested.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._route_nursery = None
            self.connection = None
            if self.connected.is_set():
                self.connected = trio.Event()
        if conn.error is not None:
            raise conn.error  # a lost connection: reconnect

    @staticmethod
    async def _watch(conn: Connection, scope: trio.CancelScope) -> None:
        with contextlib.suppress(AMQPConnectionError):
            await conn.wait_closed()
        scope.cancel()

    async def _stop_runs(self) -> None:
        grace = self._app.grace_period
        async with trio.open_nursery() as nursery:
            for run in self._runs:
                nursery.start_soon(run.stop, grace)
        # Handlers past the grace period are cancelled by leaving the route nursery; their
        # messages are requeued by the batcher. Then decisions go out and channels close.
        if self._route_nursery is not None:
            self._route_nursery.cancel_scope.cancel()
            for run in self._runs:
                with trio.CancelScope(shield=True):
                    await run.wait_done()
        for run in self._runs:
            with trio.CancelScope(shield=True):
                await run.close_channels()

    # ----------------------------------------------------------------- stop

    def stop_consuming(self) -> None:
        """Begin the graceful stop of every route (see :meth:`RouteRun.stop`); the
        connection stays open for publishing and calls until :meth:`stop`."""
        self._consuming_stopped.set()

    def stop(self) -> None:
        """Stop the routes (if not yet stopping), then close the connection; returns at
        once. A supervisor waiting to reconnect just stops."""
        self._stopping = True
        self._consuming_stopped.set()
        self._stop_requested.set()
        # The publishing connection closes once the routes have drained (run()'s finally):
        # a handler in its grace period may still publish, reply or call.
        if self.connection is None:
            self._cancel_scope.cancel()


def _refusal(exc: AMQPConnectionError) -> str | None:
    """Why ``exc`` is a configuration error no retry fixes, or None (retry: the broker may
    still be starting). The client's messages name the user, host and vhost, never the
    password."""
    if isinstance(exc, AuthenticationError):
        fix = "check the user name and password in the AMQP URL"
    elif isinstance(exc, VirtualHostError):
        fix = "create the vhost or grant the user access to it (rabbitmqctl set_permissions)"
    elif isinstance(exc, TLSError):
        fix = "check the ssl_context (CA, client certificate) and the host name"
    else:
        return None
    return f"the broker refused the connection: {exc} — {fix}"
