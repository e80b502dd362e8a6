"""``app.amqp.publish``, ``publish_sync`` (from threads) and ``app.amqp.call``: what the
backend sends (docs/amqp.md "Publishing", docs/pools.md). A base of :class:`AMQPBackend`,
which gives the running supervisor."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import trio

from ...amqp import AMQPConnectionError, BasicProperties, RpcClient
from ...codecs import Codec
from ._outgoing import outgoing_message, publish_within
from ._publisher import Body, ConnectionHelper, HelperStart, reply_lost
from ._routes import DEFAULT_CONNECTION
from ._supervisor import Supervisor

if TYPE_CHECKING:
    from ...pipeline._backend import AppServices

__all__ = ["Sending"]


class Sending:
    """Publishing and RPC calls on the backend's supervised connections."""

    app: AppServices

    async def _running_supervisor(
        self, what: str, connection: str, vhost: str | None
    ) -> Supervisor:
        raise NotImplementedError

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
        handler raised, ``TimeoutError`` after ``timeout`` seconds — waiting for the
        connection included — and :class:`~trioworker.amqp.NoRouteError` if no queue takes
        the request. Uses direct reply-to: no reply queue is declared; concurrent calls
        share one channel. The app must be running; the backend starts on demand.
        """
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        client: RpcClient | None = None
        with trio.move_on_at(deadline):
            sup = await self._running_supervisor("call", connection, vhost)
            client = await sup.publisher.rpc_client()
        if client is None:
            raise TimeoutError(f"app.amqp.call({queue!r}): no connection within {timeout} s")
        remaining = None if timeout is None else max(0.0, deadline - trio.current_time())
        try:
            return await client.call(queue, payload, timeout=remaining, codec=codec)
        except AMQPConnectionError as exc:  # a node died: fail fast and clearly, no retry
            raise reply_lost(queue, client, exc) from exc

    async def connection_helper(
        self,
        key: str,
        start: HelperStart,
        *,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
        what: str = "call",
    ) -> ConnectionHelper:
        """A helper task living on the publishing connection (``app.nameko``'s reply
        consumer), started on first use and again after each reconnect; see
        :meth:`Publisher.helper`. The backend starts on demand, as for :meth:`call`
        (``what`` names the caller in the error of an app that is not running)."""
        sup = await self._running_supervisor(what, connection, vhost)
        return await sup.publisher.helper(key, start)

    async def publish(
        self,
        body: Body | Any,
        routing_key: str,
        exchange: str = "",
        *,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
        ttl: float | None = None,
        priority: int | None = None,
        codec: str | Codec | None = None,
        properties: BasicProperties | None = None,
        mandatory: bool = False,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented API
    ) -> None:
        """Publish with publisher confirms; return once the broker took responsibility.

        Persistent (``delivery_mode=2``) unless ``persistent=False``; ``ttl`` in seconds;
        bodies encoded by ``codec``, or without one: ``bytes`` as is, ``str`` UTF-8,
        ``dict``/``list`` JSON (see ``outgoing_message`` and docs/amqp.md "Publishing").
        Raises :class:`~trioworker.amqp.PublishError` if the broker nacks it or
        (``mandatory=True``) cannot route it. While the connection is down, waits for it —
        at most ``timeout`` seconds for the whole publish, confirm included; then
        ``TimeoutError`` (the message may still have reached the broker). The app must be
        running; the backend starts on demand.
        """
        encoded, properties = outgoing_message(
            body,
            properties=properties,
            codec=codec,
            persistent=persistent,
            headers=headers,
            ttl=ttl,
            priority=priority,
        )
        await publish_within(
            timeout,
            lambda: self._running_supervisor("publish", connection, vhost),
            encoded,
            routing_key=routing_key,
            exchange=exchange,
            properties=properties,
            mandatory=mandatory,
        )

    def publish_sync(
        self,
        body: Body | Any,
        routing_key: str,
        exchange: str = "",
        *,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
        ttl: float | None = None,
        priority: int | None = None,
        codec: str | Codec | None = None,
        properties: BasicProperties | None = None,
        mandatory: bool = False,
        connection: str = DEFAULT_CONNECTION,
        vhost: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """:meth:`publish` from another thread: a sync handler's (its own pool's or the
        default one), or any thread the program started, while the app runs. Blocks until
        the broker confirmed the message; raises what :meth:`publish` raises.

        It hands the publish to the app's trio run (``trio.from_thread.run`` with the app's
        token), so the message goes out on the app's publishing connection. Raises
        ``RuntimeError`` when the app is not running, and when called from the event loop's
        own thread, where it would block the loop it waits for (``await publish()``
        there). A process-pool handler has ``trioworker.pools.publish`` (docs/pools.md).
        """
        token = self.app.trio_token
        if token is None:
            raise RuntimeError(
                "app.amqp.publish_sync() needs a running app (serve() or open_app())"
            )
        if trio.lowlevel.in_trio_run():
            raise RuntimeError(
                "app.amqp.publish_sync() blocks until the confirm: in async code (the event "
                "loop's thread) use await app.amqp.publish(...)"
            )
        publish = functools.partial(
            self.publish,
            body,
            routing_key,
            exchange,
            persistent=persistent,
            headers=headers,
            ttl=ttl,
            priority=priority,
            codec=codec,
            properties=properties,
            mandatory=mandatory,
            connection=connection,
            vhost=vhost,
            timeout=timeout,
        )
        trio.from_thread.run(publish, trio_token=token)
