"""``MemoryBroker``: an AMQP 0-9-1 broker inside the trio run, with RabbitMQ's semantics.

::

    broker = MemoryBroker()
    async with broker.running():
        async with trioworker.amqp.connect(broker.url) as conn:   # no socket
            ...
    broker.queue("orders").messages       # what is left, still inspectable

The real client connects to it over an in-memory pipe (``memory://<name>/<vhost>``) and
speaks the real protocol, so code tested against it runs unchanged against RabbitMQ.
docs/memory-broker.md lists what it implements and what it refuses (540).

Time: TTLs run on the broker's own clock, :meth:`MemoryBroker.now` (``trio.current_time()``
plus an offset), which :meth:`fast_forward` advances — a test skips a 60 s retry delay
without waiting, and under trio's ``MockClock`` the broker's timer follows the mock time.
Heartbeats and handshake timeouts use trio's clock itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from urllib.parse import quote

import trio

from ..._version import __version__
from ...amqp import ConnectError, ConnectionParameters
from . import _registry
from ._connection import ServerConnection
from ._content import Content, Entry, StoredMessage
from ._pipe import stream_pair
from ._queue import Queue
from ._server import ConnectionDriver
from ._vhost import VHost
from ._views import QueueView

__all__ = ["MemoryBroker"]

log = logging.getLogger("trioworker.testing")

#: RabbitMQ 3.10's default ``max_message_size``.
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


class MemoryBroker:
    """An in-process AMQP broker (see the module docstring).

    Arguments:
        name: what ``memory://<name>/`` reaches; a unique one when ``None``.
        vhosts: the vhosts that exist (more with :meth:`add_vhost`).
        users: user name -> password (default ``guest``/``guest``); others are refused
            with 403 ACCESS_REFUSED, as RabbitMQ refuses them.
        heartbeat, frame_max, channel_max: what ``Connection.Tune`` proposes (RabbitMQ's
            defaults).
        max_message_size: the largest body accepted (RabbitMQ 3.10's default, 128 MiB);
            a larger publish closes its channel with 406.
        keep_published: how many of the last publishes :attr:`published` keeps (``None``:
            all of them — for tests; a long-running app's broker should bound it).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        vhosts: Iterable[str] = ("/",),
        users: dict[str, str] | None = None,
        heartbeat: int = 60,
        frame_max: int = 131072,
        channel_max: int = 2047,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        keep_published: int | None = None,
    ) -> None:
        self.name = f"broker-{secrets.token_hex(4)}" if name is None else name
        self._users = dict(users) if users is not None else {"guest": "guest"}
        self._heartbeat = heartbeat
        self._frame_max = frame_max
        self._channel_max = channel_max
        self._max_message_size = max_message_size
        self._published: deque[StoredMessage] = deque(maxlen=keep_published)
        self._offset = 0.0
        self._vhosts: dict[str, VHost] = {}
        for vhost in vhosts:
            self.add_vhost(vhost)
        self._drivers: set[ConnectionDriver] = set()
        self._nursery: trio.Nursery | None = None
        self._timer: trio.CancelScope | None = None

    def __repr__(self) -> str:
        state = "running" if self._nursery is not None else "stopped"
        return f"<MemoryBroker {self.name!r} {state}, {len(self._drivers)} connections>"

    @property
    def url(self) -> str:
        """``memory://<name>/``: the default vhost of this broker."""
        return f"memory://{quote(self.name, safe='')}/"

    def add_vhost(self, name: str) -> None:
        """Create vhost ``name`` (nothing happens if it exists)."""
        if name not in self._vhosts:
            self._vhosts[name] = VHost(
                name, clock=self.now, wall_clock=self._wall_clock, schedule=self._schedule
            )

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """The broker's clock: ``trio.current_time()`` plus what :meth:`fast_forward` added."""
        return trio.current_time() + self._offset

    def _wall_clock(self) -> float:
        return time.time() + self._offset

    def fast_forward(self, seconds: float) -> None:
        """Advance the broker's clock by ``seconds`` and expire what is due now."""
        if seconds < 0:
            raise ValueError("the broker's clock only moves forward")
        self._offset += seconds
        self._expire_due()

    def next_expiry(self) -> float | None:
        """When (broker clock) the earliest message or queue expiry is due, if any."""
        deadlines = [d for v in self._vhosts.values() if (d := v.deadline()) is not None]
        return min(deadlines, default=None)

    def _schedule(self, deadline: float) -> None:
        timer = self._timer
        if timer is not None and deadline - self._offset < timer.deadline:
            timer.deadline = deadline - self._offset

    def _expire_due(self) -> None:
        now = self.now()
        for vhost in list(self._vhosts.values()):
            vhost.expire_due(now)
        self._arm()

    def _arm(self) -> None:
        timer = self._timer
        if timer is not None:
            at = self.next_expiry()
            timer.deadline = math.inf if at is None else at - self._offset

    async def _run_timer(self) -> None:
        """Expire messages and queues when they are due, without a consumer to notice."""
        while True:
            with trio.CancelScope() as timer:
                self._timer = timer
                self._arm()
                await trio.sleep_forever()
            self._timer = None
            try:
                self._expire_due()
            except Exception:  # as in _serve: log it, keep the broker running
                log.exception("memory broker %r: internal error expiring messages", self.name)

    # ---------------------------------------------------------------- running

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MemoryBroker]:
        """Run the broker for the duration of the block, reachable at :attr:`url`.

        Leaving the block closes every connection (320 CONNECTION_FORCED, as a broker
        shutting down does) and unregisters the broker; its state stays inspectable.
        """
        if self._nursery is not None:
            raise RuntimeError(f"memory broker {self.name!r} is already running")
        _registry.register(self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._run_timer)
                try:
                    yield self
                finally:
                    self._nursery = None
                    with trio.CancelScope(shield=True):
                        await self._close_all("shutdown")
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._timer = None
            _registry.unregister(self)

    async def _close_all(self, reason: str) -> None:
        drivers = list(self._drivers)
        for driver in drivers:
            driver.close_forced(reason)
        with trio.move_on_after(2.0):
            for driver in drivers:
                await driver.wait_done()

    def close_all_connections(self, reason: str = "closed by the test") -> None:
        """Close every connection with 320 CONNECTION_FORCED, as ``rabbitmqctl
        close_all_connections`` does (clients see a broker-initiated close)."""
        for driver in list(self._drivers):
            driver.close_forced(reason)

    async def accept(self, params: ConnectionParameters) -> trio.abc.Stream:
        """A new connection (the ``memory://`` transport calls this): its client end."""
        nursery = self._nursery
        if nursery is None:
            raise ConnectError(f"the in-memory broker {self.name!r} is not running")
        client, server = stream_pair()
        connection = ServerConnection(
            users=self._users,
            vhosts=self._vhosts.get,
            server_properties=self._server_properties(),
            frame_max=self._frame_max,
            channel_max=self._channel_max,
            heartbeat=self._heartbeat,
            max_message_size=self._max_message_size,
            record=self._record,
        )
        driver = ConnectionDriver(connection, server)
        self._drivers.add(driver)
        nursery.start_soon(self._serve, driver)
        await trio.lowlevel.checkpoint()
        return client

    async def _serve(self, driver: ConnectionDriver) -> None:
        try:
            await driver.run()
        except Exception:  # a bug of the broker's must not take the caller's nursery down
            log.exception("memory broker %r: internal error; the connection is closed", self.name)
        finally:
            self._drivers.discard(driver)

    def _server_properties(self) -> dict[str, object]:
        return {
            "product": "trioworker memory broker",
            "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "cluster_name": f"memory@{self.name}",
            "information": "in-memory and not durable: for tests and local development",
            "capabilities": {
                "publisher_confirms": True,
                "exchange_exchange_bindings": False,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "connection.blocked": False,
                "consumer_priorities": False,
                "authentication_failure_close": True,
                "per_consumer_qos": True,
                "direct_reply_to": True,
            },
        }

    def _record(self, content: Content) -> None:
        self._published.append(StoredMessage(content))

    # ------------------------------------------------------------- inspecting

    def _vhost(self, vhost: str) -> VHost:
        try:
            return self._vhosts[vhost]
        except KeyError:
            raise KeyError(
                f"the memory broker {self.name!r} has no vhost {vhost!r} "
                f"(it has {sorted(self._vhosts)})"
            ) from None

    def queue(self, name: str, vhost: str = "/") -> QueueView:
        """The queue ``name``; :class:`KeyError` naming the queues there are if missing."""
        queue = self._vhost(vhost).queues.get(name)
        if queue is None:
            known = ", ".join(repr(q) for q in sorted(self._vhost(vhost).queues)) or "none"
            raise KeyError(f"no queue {name!r} in vhost {vhost!r} (queues: {known})")
        return QueueView(queue, self._unacked_of)

    def queues(self, vhost: str = "/") -> list[str]:
        """The names of the queues in ``vhost``, sorted."""
        return sorted(self._vhost(vhost).queues)

    def exchange_names(self, vhost: str = "/") -> list[str]:
        """The names of the exchanges in ``vhost`` (the default exchange is ``""``), sorted."""
        return sorted(self._vhost(vhost).exchanges)

    @property
    def published(self) -> list[StoredMessage]:
        """Every ``basic.publish`` the broker received, in order (see ``keep_published``)."""
        return list(self._published)

    @property
    def connections(self) -> int:
        """How many client connections are open."""
        return len(self._drivers)

    def _unacked_of(self, queue: Queue) -> list[Entry]:
        return [e for d in self._drivers for e in d.connection.unacked_of(queue)]

    def is_idle(self) -> bool:
        """Nothing is in flight: no bytes unread or unwritten on any connection, no
        delivery unacknowledged, and no queue holds a message a consumer has room for."""
        if any(not driver.idle for driver in self._drivers):
            return False
        for vhost in self._vhosts.values():
            for queue in (*vhost.queues.values(), *vhost.reply_queues.values()):
                if queue.unacked:
                    return False
                if queue.ready and any(c.can_take() for c in queue.consumers):
                    return False
        return True
