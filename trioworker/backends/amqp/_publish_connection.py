"""The publishing connection of one broker connection: publishers apart from consumers.

During a memory or disk alarm RabbitMQ stops reading every connection that publishes. Were
publishing and consuming to share a connection, its acks would no longer be read and its
consumers would stall — the very consumers that drain the backlog. So ``app.amqp.publish``,
the RPC client (``app.amqp.call``) and RPC route replies publish on a connection of their
own, named ``<app>:<connection>:publish`` on the broker, and ``Connection.Blocked`` pauses
them only: the consumer connection keeps acknowledging.

The connection opens on first use (a publish, a call, an RPC route's first reply — an app
with RPC routes asks for it when it starts) and is then kept up like the consumer
connection, on the same nodes in the same order: on a loss it fails over to the next node
at once, with backoff and jitter between full rounds (:class:`~._failover.Failover`), until
the supervisor stops it. Publishes the loss left unconfirmed are published again on the
next connection (see :class:`~._publisher.Publisher`).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Sequence

import trio

from ...amqp import AMQPConnectionError, connect
from ._failover import Failover
from ._publisher import Publisher

__all__ = ["PublishConnection"]

log = logging.getLogger("trioworker.amqp")


class PublishConnection:
    """Keeps the publishing connection of one supervisor up once someone asked for it."""

    def __init__(self, publisher: Publisher, name: str, urls: Sequence[str]) -> None:
        self.publisher = publisher
        self.name = name
        self._urls = tuple(urls)
        self.failover = Failover(self._urls)
        #: Connections lost or refused so far, each followed by a reconnect attempt.
        self.reconnects = 0
        self._up = False
        self._stop = trio.Event()

    def reset(self) -> None:
        """Ready for another serve of the app."""
        self._stop = trio.Event()
        self.failover = Failover(self._urls)
        self.publisher.reset()

    def use_urls(self, urls: Sequence[str]) -> None:
        """Connect to ``urls`` from now on (``AMQPBackend.redirect``, before a serve)."""
        self._urls = tuple(urls)
        self.failover = Failover(self._urls)

    @property
    def node(self) -> str | None:
        """``host:port`` of the node the publishing connection is open to; None while down."""
        return self.failover.label if self.up else None

    @property
    def up(self) -> bool:
        """True while the publishing connection is open."""
        conn = self.publisher.connection
        return conn is not None and not conn.is_closed

    @property
    def blocked(self) -> bool:
        """True while the broker blocks the publishing connection (``Connection.Blocked``)."""
        conn = self.publisher.connection
        return conn is not None and not conn.is_closed and conn.is_blocked

    def problems(self) -> list[str]:
        """For ``/health``: the connection is wanted and down, or the broker blocks it."""
        if not self.publisher.wanted:
            return []
        conn = self.publisher.connection
        if conn is None or conn.is_closed:
            return [f"publish connection {self.name!r} is down"]
        if conn.is_blocked:
            return [
                f"publish connection {self.name!r} is blocked by the broker "
                f"({conn.blocked_reason or 'no reason given'}): publishing waits"
            ]
        return []

    def stop(self) -> None:
        """Close the connection (publishers still waiting then fail); returns at once."""
        self._stop.set()

    async def run(self, connection_name: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """Wait until the publisher is wanted, then keep its connection up until stop()."""
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._cancel_on_stop, outer.cancel_scope)
                await self.publisher.wait_wanted()
                await self._keep_up(connection_name, ssl_context)
                outer.cancel_scope.cancel()
        finally:
            self.publisher.end()

    async def _cancel_on_stop(self, scope: trio.CancelScope) -> None:
        await self._stop.wait()
        # Give a publisher connection that is open a polite close (in _keep_up), and a
        # supervisor that waits (for a want, or to reconnect) its way out.
        if self.publisher.connection is None:
            scope.cancel()

    async def _keep_up(self, connection_name: str, ssl_context: ssl.SSLContext | None) -> None:
        failover = self.failover
        while not self._stop.is_set():
            try:
                async with connect(
                    failover.url, ssl_context=ssl_context, connection_name=connection_name
                ) as conn:
                    failover.opened(trio.current_time())
                    log.info(
                        "AMQP publish connection %r open on node %s", self.name, failover.label
                    )
                    async with trio.open_nursery() as nursery:
                        # The connection's own tasks (the RPC client's replies) live here.
                        self.publisher.attach(conn, nursery)
                        try:
                            nursery.start_soon(self._close_on_stop, nursery.cancel_scope)
                            with contextlib.suppress(AMQPConnectionError):
                                await conn.wait_closed()  # raised below, after the nursery
                        finally:
                            self.publisher.detach()
                            nursery.cancel_scope.cancel()
                if conn.error is not None:
                    raise conn.error
            except AMQPConnectionError as exc:
                if self._stop.is_set():
                    return
                self.reconnects += 1
                node = failover.label
                delay = failover.failed(trio.current_time())
                log.warning(
                    "AMQP publish connection %r%s lost or refused (%s); %s",
                    self.name,
                    f" to node {node}" if failover.several else "",
                    exc,
                    failover.next_step(delay),
                )
                with trio.move_on_at(trio.current_time() + delay):
                    await self._stop.wait()

    async def _close_on_stop(self, scope: trio.CancelScope) -> None:
        await self._stop.wait()
        scope.cancel()  # leaving `async with connect()` closes the connection politely
