"""``app.amqp.publish`` and ``app.amqp.call``: what the backend sends (docs/amqp.md
"Publishing"). A base of :class:`AMQPBackend`, which gives the running supervisor."""

from __future__ import annotations

import math
from typing import Any

import trio

from ...amqp import BasicProperties, RpcClient
from ...codecs import Codec
from ._outgoing import outgoing_message, publish_within
from ._publisher import Body
from ._routes import DEFAULT_CONNECTION
from ._supervisor import Supervisor

__all__ = ["Sending"]


class Sending:
    """Publishing and RPC calls on the backend's supervised connections."""

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
        return await client.call(queue, payload, timeout=remaining, codec=codec)

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
