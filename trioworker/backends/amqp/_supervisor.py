"""One broker connection (a URL and a vhost), kept up for as long as the app runs.

The supervisor connects, starts a :class:`RouteRun` of every route on the connection, and
on connection loss — broker restart, ``rabbitmqctl close_all_connections``, a network cut,
missed heartbeats — reconnects with exponential backoff and jitter and starts every route
again (channels, QoS, declares, consumers). Its :class:`Publisher` publishes on a
connection of its own (:class:`PublishConnection`, opened on first use), so a broker that
blocks publishers during an alarm never stops the consumers' acks.

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
from ...amqp import (
    AMQPConnectionError,
    AuthenticationError,
    Connection,
    TLSError,
    VirtualHostError,
    connect,
)
from ...pipeline._backoff import backoff_delay
from ._publish_connection import PublishConnection
from ._publisher import Publisher
from ._route_run import RouteRun
from ._routes import AMQPRoute

if TYPE_CHECKING:
    import ssl

    from ...pipeline import AppServices

__all__ = ["Supervisor"]

log = logging.getLogger("trioworker.amqp")


class Supervisor:
    """Keeps one connection up: connect, run the routes, reconnect with backoff."""

    def __init__(self, app: AppServices, key: tuple[str, str | None], url: str) -> None:
        self._app = app
        self.key = key
        self.url = url
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
        self.publishing = PublishConnection(self.publisher, self.name)
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
        self.publishing.reset()

    @property
    def name(self) -> str:
        """The connection's name, with its vhost if the route named one: ``default/audit``."""
        name, vhost = self.key
        return name if vhost is None else f"{name}/{vhost}"

    @property
    def up(self) -> bool:
        """True while the connection is open."""
        return self.connection is not None and not self.connection.is_closed

    def problems(self) -> list[str]:
        """Why this connection does not do its job right now (for ``/health``)."""
        publishing = self.publishing.problems()
        if not self.up:
            return [f"connection {self.name!r} is down", *publishing]
        return [problem for run in self._runs for problem in run.problems()] + publishing

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
        self._route_nursery.start_soon(run.run)

    # -------------------------------------------------------------- running

    async def run(self) -> None:
        """Connect and reconnect until :meth:`stop`; the publishing connection alongside."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                self.publishing.run,
                self.url,
                f"{self._app.name}:{self.name}:publish",
                self.ssl_context,
            )
            try:
                await self._run_consuming()
            finally:
                self.publishing.stop()

    async def _run_consuming(self) -> None:
        attempt = 0
        try:
            with self._cancel_scope:
                while not self._stopping:
                    try:
                        async with connect(
                            self.url,
                            ssl_context=self.ssl_context,
                            connection_name=f"{self._app.name}:{self.name}",
                        ) as conn:
                            attempt = 0
                            await self._serve(conn)
                    except AMQPConnectionError as exc:
                        self.last_error = exc
                        why = _refusal(exc)
                        if why is not None and not self._connected_once:
                            # Retrying cannot fix it: the app's startup fails with it.
                            self.startup_error = self.startup_error or StartupError(why)
                        self._first_attempt.set()
                        if self._stopping:
                            break
                        self.reconnects += 1
                        delay = backoff_delay(attempt)
                        attempt += 1
                        log.warning(
                            "AMQP connection %r lost or refused (%s); reconnecting in %.2f s",
                            self.name,
                            why or exc,
                            delay,
                        )
                        await trio.sleep(delay)
        finally:
            self._first_attempt.set()

    async def _serve(self, conn: Connection) -> None:
        self.connection = conn
        self._connected_once = True
        self._runs = []
        log.info("AMQP connection %r open (%s)", self.name, conn.params.safe_url())
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
        self.publishing.stop()
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
