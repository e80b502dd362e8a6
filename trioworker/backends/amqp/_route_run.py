"""One route running on one connection, for as long as that connection lives.

::

    RouteRun
      ├── one channel + consumer + AckTracker per queue ── Message ──▶ Batcher
      └── Batcher ── bulk ──▶ handler ── outcome ──▶ decisions ──▶ AckTracker ──▶ frames

A route consumes each of its queues on its own channel: delivery tags are per channel, and
one consumer per channel keeps them in delivery order, which is what lets the tracker turn
runs of acks into one ``Basic.Ack(multiple=True)``. When the connection dies the run is
cancelled with everything in it: buffered deliveries are dropped and running handlers are
cancelled; the broker redelivers all of them (at least once). The supervisor starts a new
run on the next connection.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from ..._log_context import bind
from ...amqp import (
    AMQPConnectionError,
    AMQPError,
    Channel,
    ChannelClosedError,
    Connection,
    Consumer,
    ConsumerCancelledError,
    Delivery,
    NotFoundError,
)
from ...pipeline._actions import Actions
from ...pipeline._backoff import backoff_delay
from ...pipeline._batcher import Batcher
from ...pipeline._failures import FailureWatch
from ...pipeline._handlers import adapt
from ._acks import AckTracker
from ._declare import MissingQueue, TopologyConflict, prepare_queue
from ._message import (
    OFFSET_HEADER,
    Message,
    delivery_channel,
    requeue_unhandled,
    settle,
    stream_offset,
    tracker_of,
)
from ._retrying import Retrier
from ._routes import AMQPRoute
from ._streams import StreamPosition, StreamTracker, pump_stream

__all__ = ["RouteRun"]

log = logging.getLogger("trioworker.amqp")

#: Longest wait between attempts to consume a queue that is missing or whose channel the
#: broker closed (a configuration problem someone has to fix: no need to ask often).
MISSING_QUEUE_RETRY_CAP = 30.0
#: At most this long for the consumers' CancelOk, and for closing the channels.
CLOSE_TIMEOUT = 5.0


class RouteRun:
    """One route on one connection: its channels, consumers, batcher and decisions."""

    def __init__(self, route: AMQPRoute, connection: Connection) -> None:
        self.route = route
        self._connection = connection
        self._trackers: list[AckTracker] = []
        self._channels: list[Channel] = []
        self._consumers: list[tuple[Channel, str]] = []
        #: queue -> consumer tag, for the queues consumed right now (health).
        self._consuming: dict[str, str] = {}
        self._stopping = False
        self._batcher: Batcher[Message] = Batcher(
            adapt(route.handler, timeout=route.timeout),
            bulk_size=route.effective_bulk_size,
            flush_interval=route.flush_interval,
            concurrency=route.concurrency,
            on_done=self._on_done,
            on_unhandled=self._on_unhandled,
            stats=route.stats.batcher,
        )
        self._done = trio.Event()
        # A handler that keeps failing: back off between bulks, summarise the logs.
        self._failures = FailureWatch(f"route {route.name!r}", log)
        self._retrier = (
            Retrier(route, connection, self._batcher.pause) if route.retry is not None else None
        )
        #: Set once every queue was tried once (consuming, or failed): what the app's
        #: startup waits for (a 406 then is a StartupError, see ``startup_conflicts``).
        self.first_attempt = trio.Event()
        self._untried = set(route.queues)
        for position in route.streams.values():
            position.new_connection()  # what the last connection had in flight comes again

    # --------------------------------------------------------------- state

    def _tried(self, queue: str) -> None:
        self._untried.discard(queue)
        if not self._untried:
            self.first_attempt.set()

    def consuming_all(self) -> bool:
        """True while every queue of the route is consumed."""
        return all(q in self._consuming for q in self.route.queues)

    def problems(self) -> list[str]:
        """Why this run does not do its job right now (for ``/health``): queues it should
        consume and does not. Empty while stopping: not consuming is then the point."""
        if self._stopping:
            return []
        conflicts = self.route.conflicts
        missing = [q for q in self.route.queues if q not in self._consuming and q not in conflicts]
        problems = [f"route {self.route.name!r} is not consuming {missing}"] if missing else []
        return problems + [f"route {self.route.name!r}: {c}" for c in conflicts.values()]

    def longest_running_call(self) -> float | None:
        """Seconds this run's oldest running handler call has run; None: none runs."""
        return self._batcher.longest_running_call()

    def buffered(self) -> int:
        """Deliveries received and not yet handed to the handler; 0 once the connection is
        gone (what it buffered is lost with it: the broker redelivers)."""
        return 0 if self._connection.is_closed else self._batcher.waiting

    def in_flight(self) -> dict[str, int]:
        """What this run holds that is not settled with the broker yet: deliveries
        ``waiting`` for a handler (buffered, or in a bulk filling up), handler calls
        ``running``, and deliveries ``unsettled`` (handled or not, no decision sent yet —
        a retry copy waiting for its confirm included). All zero: the run is idle, what a
        test's ``drain()`` waits for. A dead channel's deliveries do not count: the broker
        redelivers them."""
        batcher = self._batcher
        return {
            "waiting": batcher.waiting,
            "running": batcher.running,
            "unsettled": sum(t.outstanding for t in self._trackers if not t.channel.is_closed),
        }

    def flush(self) -> bool:
        """Hand the bulk filling up to the handler now (see :meth:`Batcher.flush`)."""
        return self._batcher.flush()

    # ----------------------------------------------------------- decisions

    def _on_done(self, bulk: list[Message], error: BaseException | None) -> None:
        route = self.route
        pause = 0.0
        if error is not None:
            pause = self._failures.failed(error, len(bulk))
            default = route.on_exception
        else:
            self._failures.succeeded()
            default = route.on_success
        if self._retrier is not None:
            bulk, default = self._retrier.take(bulk, default, error)
        if pause and default is Actions.REQUEUE:
            # Requeued after a failure, the messages come straight back: no hot loop.
            self._batcher.pause(pause)
        if bulk:
            settle(bulk, default, route.stats)

    def _on_unhandled(self, bulk: list[Message]) -> None:
        requeue_unhandled(bulk, self.route.stats)

    # ------------------------------------------------------------- running

    async def run(self) -> None:
        """Consume every queue of the route until stopped or cancelled (the connection
        died, or the supervisor cut the grace period short)."""
        try:
            async with trio.open_nursery() as nursery:
                if self._retrier is not None:
                    await nursery.start(self._retrier.run)
                nursery.start_soon(self._batcher.run)
                for queue in self.route.queues:
                    nursery.start_soon(self._consume, queue)
        finally:
            self.first_attempt.set()
            self._done.set()

    async def _consume(self, queue: str) -> None:
        """Consume one queue on its own channel; re-subscribe after broker cancels."""
        bind(queue=queue)  # this task's log lines are about this queue
        route = self.route
        attempt = 0
        while not self._stopping:
            channel: Channel | None = None
            try:
                channel = await self._connection.open_channel()
                self._channels.append(channel)
                await channel.basic_qos(prefetch_count=route.prefetch)
                vhost = self._connection.params.virtual_host
                await prepare_queue(channel, route.queue_spec(queue), vhost, route.declare)
                route.conflicts.pop(queue, None)
                if self._retrier is not None:  # always: retries need their queues
                    await self._retrier.declare(channel, queue)
                stream = route.streams.get(queue)
                tracker: AckTracker
                if stream is not None:  # docs/amqp.md, "Streams"
                    tracker = StreamTracker(channel, stream)
                else:
                    tracker = AckTracker(channel, retries=self._retrier is not None)
                self._trackers.append(tracker)
                while not self._stopping:
                    arguments = None if stream is None else {OFFSET_HEADER: stream.consume_from()}
                    consumer = await channel.basic_consume(queue, arguments=arguments)
                    self._consumers.append((channel, consumer.consumer_tag))
                    where = "" if arguments is None else f" from offset {arguments[OFFSET_HEADER]}"
                    log.info("route %r consuming queue %r%s", route.name, queue, where)
                    attempt = 0  # subscribed: the next failure starts the backoff over
                    self._consuming[queue] = consumer.consumer_tag
                    route.queue_logs[queue].ok()
                    self._tried(queue)
                    try:
                        if not isinstance(tracker, StreamTracker):
                            await self._pump(consumer, tracker, queue)
                        elif await pump_stream(
                            consumer, tracker, queue, self._batcher.put, route.stats
                        ):  # a message was requeued: read again from the first not handled
                            await self._rewind(
                                channel, consumer.consumer_tag, queue, tracker.position
                            )
                            continue
                        return  # cancelled by us: shutdown
                    except ConsumerCancelledError:
                        self._consuming.pop(queue, None)
                        log.warning(
                            "route %r: the broker cancelled the consumer of queue %r (deleted?);"
                            " re-subscribing",
                            route.name,
                            queue,
                        )
                    await trio.sleep(backoff_delay(attempt))
                    attempt += 1
            except TopologyConflict as exc:
                # Permanent: not retried on this connection (a reconnect tries once more).
                route.conflicts[queue] = exc
                route.queue_logs[queue].problem(str(exc), None)
                self._tried(queue)
                return
            except (MissingQueue, NotFoundError) as exc:
                delay = backoff_delay(attempt, cap=MISSING_QUEUE_RETRY_CAP)
                text = str(exc) if isinstance(exc, MissingQueue) else exc.reply_text
                route.queue_logs[queue].problem(text, delay)
                self._tried(queue)
            except ChannelClosedError as exc:
                delay = backoff_delay(attempt, cap=MISSING_QUEUE_RETRY_CAP)
                route.queue_logs[queue].problem(
                    f"channel for queue {queue!r} closed by the broker: {exc}", delay
                )
                self._tried(queue)
            except AMQPConnectionError:
                return  # the supervisor reconnects and starts a new run
            finally:
                if channel is None or channel.is_closed:
                    self._consuming.pop(queue, None)
                    if channel is not None:
                        self._forget_buffered(channel, queue)
            if self._stopping or self._connection.is_closed:
                return
            await trio.sleep(delay)
            attempt += 1

    async def _pump(self, consumer: Consumer, tracker: AckTracker, queue: str) -> None:
        # The hot path: per delivery, one track() and one put(); nothing awaits.
        put = self._batcher.put
        track = tracker.track
        counters = self.route.stats.queue(queue)
        first = True
        async for batch in consumer.batches():
            if first:
                first = False
                self._warn_if_stream(queue, batch[0])
            counters.received += len(batch)  # per batch, not per message
            for delivery in batch:
                track(delivery.delivery_tag)
                put(Message(delivery, queue, tracker))

    def _warn_if_stream(self, queue: str, delivery: Delivery) -> None:
        """A queue named without ``Queue(kind="stream")`` that delivers from a stream: its
        first rejection would close the connection (RabbitMQ does not take nacks on a
        stream), so say what to change — once per route and queue."""
        if stream_offset(delivery) is None or queue in self.route.stream_warned:
            return
        self.route.stream_warned.add(queue)
        log.warning(
            "route %r: queue %r delivers from a stream (x-stream-offset): consume it as "
            "Queue(%r, kind='stream'); until then a rejection or a requeue makes RabbitMQ "
            "close the connection, and a reconnect skips what arrived meanwhile",
            self.route.name, queue, queue,
        )  # fmt: skip

    async def _rewind(
        self, channel: Channel, consumer_tag: str, queue: str, stream: StreamPosition
    ) -> None:
        """Cancel the stream's consumer, back off (rewinds in a row without progress
        wait longer: no hot loop), and let the caller consume again."""
        self._consuming.pop(queue, None)
        with contextlib.suppress(AMQPError):
            await channel.basic_cancel(consumer_tag)
        if self._stopping:
            return  # the requeues of a stop: read again by the next run
        delay = backoff_delay(stream.rewinds)
        stream.rewinds += 1
        log.info(
            "route %r: a message of stream %r was requeued: reading again from the first "
            "not handled in %.1f s",
            self.route.name, queue, delay,
        )  # fmt: skip
        await trio.sleep(delay)

    def _forget_buffered(self, channel: Channel, queue: str) -> None:
        """The channel closed (the broker closed it, say for a ``consumer_timeout``): its
        deliveries not yet handed to the handler are dropped — the broker redelivers them,
        on the next channel. Handing them over would handle each twice, the first time for
        nothing (its decision could never be sent). Running calls finish; their decisions
        for the dead channel are dropped and counted (see ``settle``)."""

        def on_dead_channel(message: Message) -> bool:
            if delivery_channel(message) is not channel:
                return False
            tracker = tracker_of(message)
            if isinstance(tracker, StreamTracker):  # the route reads it again, not the broker
                tracker.forget(message.delivery_tag)
            return True

        dropped = self._batcher.discard(on_dead_channel)
        if dropped:
            log.info(
                "route %r: channel %d of queue %r closed: %d buffered deliveries dropped, "
                "the broker redelivers them",
                self.route.name,
                channel.number,
                queue,
                dropped,
            )

    # ---------------------------------------------------------------- stop

    async def stop(self, grace_period: float) -> None:
        """Graceful stop: no new deliveries, requeue the buffered, let handlers finish.

        Order matters. The consumers are cancelled first: requeueing while a consumer is
        still active would let the broker hand the same messages straight back to this
        stopping worker (each round trip a redelivery, counted against a quorum queue's
        delivery limit). Then the batcher closes, so nothing new starts, and what is
        buffered — including deliveries that arrived before the CancelOk — goes back to the
        queue. Running handler calls get ``grace_period`` seconds; past that this returns,
        and the supervisor cancels them (their messages are requeued). The decisions go out
        in :meth:`close_channels`, before the channels close.
        """
        self._stopping = True
        self._failures.flush()
        try:
            with trio.move_on_after(min(grace_period, CLOSE_TIMEOUT)):
                for channel, tag in self._consumers:
                    try:
                        await channel.basic_cancel(tag)
                    except AMQPError:
                        pass  # the channel is gone: its deliveries are redelivered anyway
        finally:
            self._batcher.close()  # even if cut short: nothing new starts
        with trio.move_on_after(grace_period) as scope:
            await self._batcher.wait_idle()
            if self._retrier is not None:
                await self._retrier.wait_idle()  # copies on their way: let them land
                self._retrier.close()
        if scope.cancelled_caught:
            log.warning(
                "route %r: handlers still running after the %.1f s grace period: cancelled, "
                "their messages are requeued",
                self.route.name,
                grace_period,
            )

    async def wait_done(self) -> None:
        """Wait until :meth:`run` has returned (after its nursery was cancelled)."""
        await self._done.wait()

    async def close_channels(self) -> None:
        """Send the decisions still held, then close the route's channels politely."""
        for tracker in self._trackers:
            tracker.flush()
        with trio.move_on_after(CLOSE_TIMEOUT):
            for channel in self._channels:
                with contextlib.suppress(AMQPError):
                    await channel.close()
