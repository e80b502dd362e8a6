"""Retries without a broker plugin: delay queues, then the dead-letter queue.

::

    handler fails ─▶ copy (confirmed, persistent, attempt + 1) ─▶ <queue>.retry.<ms>
                         │                                          │ TTL expires
                         └─ confirmed: ack the original             ▼
                                                         back to <queue> (default exchange)
    attempts used up / ``never`` / rejected ─▶ copy with the reason ─▶ <queue>.dlq, then ack

One :class:`Retrier` per run of a route with ``retry=`` (one connection's life). It takes
the messages whose decision is ``RETRY`` or ``REJECT`` out of a settled bulk (the rest is
settled as usual, coalesced by the tracker) and, in a task of the run, publishes their
copies on its own confirm channel. Only a copy the broker confirmed lets its original be
acknowledged; a copy nacked, returned (``mandatory``), not confirmed within
:data:`CONFIRM_TIMEOUT` or lost with the connection leaves the original unacknowledged: it
is requeued (or redelivered by the broker once the channel is gone) — at least once, never
lost. Nothing is held unacknowledged for a delay: the delay is the delay queue's TTL.

Jitter: a delay queue holds one delay ``d``; its TTL is ``d * (1 + jitter)`` and each copy
carries an ``expiration`` drawn from ``[d, d * (1 + jitter)]``. RabbitMQ expires per-message
TTLs only at the head of a queue, which here only shortens nothing: a copy behind the head
was published later and the head leaves by ``d * (1 + jitter)`` after its own publish, so
every copy waits between ``d`` and ``d * (1 + jitter)``. Headers are in docs/retries.md.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...amqp import AMQPError, BasicProperties, Channel, Confirmation, Connection
from ...pipeline._actions import Actions
from ...pipeline._backoff import backoff_delay
from ._acks import AckTracker
from ._message import ATTEMPT_HEADER, Message, tracker_of
from ._retry_policy import Retry
from ._routes import AMQPRoute
from ._topology import Queue

__all__ = ["CONFIRM_TIMEOUT", "HEADERS", "Retrier", "dead_letter_name", "delay_queue_name"]

log = logging.getLogger("trioworker.amqp")

#: A copy not confirmed within this many seconds is given up: its original is requeued.
CONFIRM_TIMEOUT = 30.0
#: Exception messages are trimmed to this many bytes of UTF-8 in the dead-letter headers.
MAX_ERROR_BYTES = 1024

#: The headers the copies carry (docs/retries.md).
HEADERS = {
    "attempt": ATTEMPT_HEADER,  # the handling the copy is for: 2 for the first retry
    "first_failure": "x-trioworker-first-failure",  # ms since the epoch
    "exchange": "x-trioworker-original-exchange",
    "routing_key": "x-trioworker-original-routing-key",
    "queue": "x-trioworker-original-queue",
    # dead-letter only:
    "reason": "x-trioworker-reason",  # "exhausted" | "never" | "rejected"
    "attempts": "x-trioworker-attempts",  # handlings done
    "exception": "x-trioworker-exception",  # module.QualName
    "message": "x-trioworker-exception-message",  # str(error), trimmed
}

#: ``on_exhausted(messages, error)``: async, or a plain function (run in a thread).
ExhaustedHook = Callable[[list[Message], BaseException | None], Awaitable[None] | None]


def route_on_exception(
    on_exception: Actions | None, retry: Retry | None, on_exhausted: object
) -> Actions:
    """Check ``consume()``'s retry options; return its ``on_exception`` (default: ``RETRY``
    with ``retry=``, else ``REQUEUE``, the v0 default)."""
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError("retry= takes a trioworker.Retry")
    if on_exhausted is not None and not callable(on_exhausted):
        raise TypeError("on_exhausted= takes a callable (messages, error)")
    if on_exhausted is not None and retry is None:
        raise ValueError("on_exhausted= needs retry=Retry(...)")
    if on_exception is None:
        return Actions.REQUEUE if retry is None else Actions.RETRY
    if on_exception is Actions.RETRY and retry is None:
        raise ValueError("on_exception=Actions.RETRY needs retry=Retry(...)")
    return on_exception


def delay_queue_name(queue: str, delay: float) -> str:
    """``<queue>.retry.<ms>``: the delay queue of ``queue`` for ``delay`` seconds."""
    return f"{queue}.retry.{round(delay * 1000)}"


def dead_letter_name(route: AMQPRoute, queue: str) -> str:
    """The ``Queue.dead_letter`` of ``queue`` if the route has one, else ``<queue>.dlq``."""
    spec = route.queue_spec(queue)
    if isinstance(spec, Queue) and spec.dead_letter is not None:
        return spec.dead_letter
    return f"{queue}.dlq"


def _dead_letter_queue(route: AMQPRoute, queue: str) -> Queue:
    spec = route.queue_spec(queue)
    if isinstance(spec, Queue):
        dlq = spec.dead_letter_queue()
        if dlq is not None:
            return dlq
    return Queue(dead_letter_name(route, queue))


def _type_name(error: BaseException) -> str:
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _trimmed(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_ERROR_BYTES:
        return text
    return data[: MAX_ERROR_BYTES - 3].decode(errors="ignore") + "..."


class Retrier:
    """The retry mechanism of one route run (see the module docstring)."""

    def __init__(self, route: AMQPRoute, connection: Connection, pause: Callable[[float], None]):
        assert route.retry is not None
        self.route = route
        self.policy: Retry = route.retry
        self._connection = connection
        self._pause = pause  # back off the route after copies that failed
        self._failures = 0
        self._nursery: trio.Nursery | None = None
        self._channel: Channel | None = None
        self._channel_lock = trio.Lock()
        self._declared: set[str] = set()
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()
        self._closed = trio.Event()
        hook = route.on_exhausted
        self._hook: ExhaustedHook | None = hook
        self._hook_is_async = hook is not None and inspect.iscoroutinefunction(hook)

    # ------------------------------------------------------------ topology

    def _delay_arguments(self, queue: str, delay: float) -> dict[str, Any]:
        return {
            "x-message-ttl": round(delay * 1000 * (1 + self.policy.jitter)),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        }

    async def declare(self, channel: Channel, queue: str) -> None:
        """Declare the delay queues of ``queue`` (one per distinct delay) and its dead-letter
        queue (idempotent: runs on every connect)."""
        for delay in self.policy.distinct_delays:
            await self._declare_delay(channel, queue, delay)
        dlq = _dead_letter_queue(self.route, queue)
        await channel.queue_declare(dlq.name, durable=True, arguments=dlq.declare_arguments())

    async def _declare_delay(self, channel: Channel, queue: str, delay: float) -> str:
        name = delay_queue_name(queue, delay)
        if name not in self._declared:
            await channel.queue_declare(
                name, durable=True, arguments=self._delay_arguments(queue, delay)
            )
            self._declared.add(name)
        return name

    # ------------------------------------------------------------ deciding

    def take(
        self, bulk: list[Message], default: Actions, error: BaseException | None
    ) -> tuple[list[Message], Actions]:
        """Take the messages to retry or dead-letter out of ``bulk`` and start sending
        them; return the others and the default action they take.

        ``error`` is the handler's exception (``None``: it returned). A default ``RETRY``
        for an exception in ``never`` dead-letters at once; for an exception not in ``on``
        it becomes ``REQUEUE`` (the v0 default, with the route's backoff): the policy does
        not cover it.
        """
        policy = self.policy
        never = False
        if default is Actions.RETRY and error is not None and not policy.retries(error):
            if isinstance(error, policy.never):
                never = True
            else:
                default = Actions.REQUEUE
        retry: list[Message] = []
        exhausted: list[Message] = []
        rejected: list[Message] = []
        rest: list[Message] = []
        for message in bulk:
            decision = message.decision
            if decision is None:
                if never:
                    exhausted.append(message)
                    continue
                decision = default
            if decision is Actions.RETRY:
                if policy.exhausted(message.attempt):
                    exhausted.append(message)
                else:
                    retry.append(message)
            elif decision is Actions.REJECT:
                rejected.append(message)
            else:
                rest.append(message)
        if (retry or exhausted or rejected) and self._nursery and not self._closed.is_set():
            self._start()
            self._nursery.start_soon(self._send, retry, exhausted, rejected, error, never)
        elif retry or exhausted or rejected:
            rest.extend(retry + exhausted + rejected)  # not running: back to the queue
            for message in retry + exhausted + rejected:
                message.reject(requeue=True)
        return rest, default

    # ------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the copies are sent from, for as long as the run lives."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._closed.wait()
        self._nursery = None

    def close(self) -> None:
        """Stop once the copies on their way have landed (graceful stop); messages retried
        after this are requeued instead."""
        self._closed.set()

    async def wait_idle(self) -> None:
        """Wait until no copy is on its way (graceful stop)."""
        await self._idle.wait()

    def _start(self) -> None:
        self._running += 1
        if self._running == 1:
            self._idle = trio.Event()

    async def _confirm_channel(self) -> Channel:
        async with self._channel_lock:
            channel = self._channel
            if channel is None or channel.is_closed:
                channel = await self._connection.open_channel()
                await channel.confirm_select()
                self._channel = channel
            return channel

    async def _send(
        self,
        retry: list[Message],
        exhausted: list[Message],
        rejected: list[Message],
        error: BaseException | None,
        never: bool,
    ) -> None:
        sent: list[tuple[Message, Confirmation, str]] = []
        unsent = retry + exhausted + rejected
        try:
            if exhausted:
                await self._call_hook(exhausted, error)
            channel = await self._confirm_channel()
            now_ms = int(time.time() * 1000)
            for message in retry:
                delay = getattr(message, "_retry_delay", None)
                if delay is None:
                    delay = self.policy.delay_before(message.attempt + 1)
                target = await self._declare_delay(channel, message.queue, delay)
                properties = self._copy_properties(message, now_ms, retry_delay=delay)
                confirmation = await channel.publish(
                    message.body, routing_key=target, properties=properties, mandatory=True
                )
                sent.append((message, confirmation, "retried"))
            dead = [(m, "never" if never else "exhausted") for m in exhausted]
            dead += [(m, "rejected") for m in rejected]
            for message, reason in dead:
                properties = self._copy_properties(message, now_ms)
                headers = properties.headers
                assert headers is not None
                headers[HEADERS["reason"]] = reason
                headers[HEADERS["attempts"]] = message.attempt
                if error is not None and reason != "rejected":
                    headers[HEADERS["exception"]] = _type_name(error)
                    headers[HEADERS["message"]] = _trimmed(str(error))
                target = dead_letter_name(self.route, message.queue)
                confirmation = await channel.publish(
                    message.body, routing_key=target, properties=properties, mandatory=True
                )
                sent.append((message, confirmation, reason))
            unsent = []
            with trio.move_on_after(CONFIRM_TIMEOUT):
                for _, confirmation, _ in sent:
                    try:
                        await confirmation.wait()
                    except AMQPError:
                        pass  # that one failed: its original is requeued below
        except AMQPError as exc:
            log.warning(
                "route %r: could not send %d copies for retry/dead-letter (%s): their "
                "originals are requeued",
                self.route.name,
                len(unsent) + sum(not c.acked for _, c, _ in sent),
                exc,
            )
        finally:
            self._settle(sent, unsent)
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def _copy_properties(
        self, message: Message, now_ms: int, *, retry_delay: float | None = None
    ) -> BasicProperties:
        """The original's properties, persistent, with our headers (and, for a delay queue,
        the jittered ``expiration``)."""
        try:
            p = message.properties
        except Exception:  # undecodable properties: the body still deserves its retry
            p = BasicProperties()
        headers: dict[str, Any] = dict(p.headers or {})
        delivery = message.delivery
        headers.setdefault(HEADERS["first_failure"], now_ms)
        headers.setdefault(HEADERS["exchange"], delivery.exchange)
        headers.setdefault(HEADERS["routing_key"], delivery.routing_key)
        headers.setdefault(HEADERS["queue"], message.queue)
        expiration = None
        if retry_delay is not None:
            headers[HEADERS["attempt"]] = message.attempt + 1
            spread = 1 + random.uniform(0, self.policy.jitter)
            expiration = str(round(retry_delay * 1000 * spread))
        return BasicProperties(
            content_type=p.content_type,
            content_encoding=p.content_encoding,
            headers=headers,
            delivery_mode=2,
            priority=p.priority,
            correlation_id=p.correlation_id,
            reply_to=p.reply_to,
            expiration=expiration,
            message_id=p.message_id,
            timestamp=p.timestamp,
            message_type=p.message_type,
            user_id=p.user_id,
            app_id=p.app_id,
        )

    async def _call_hook(self, messages: list[Message], error: BaseException | None) -> None:
        hook = self._hook
        if hook is None:
            return
        try:
            if self._hook_is_async:
                await hook(messages, error)  # type: ignore[misc]
            else:
                await trio.to_thread.run_sync(hook, messages, error)
        except Exception:
            log.exception(
                "route %r: on_exhausted failed (the messages are dead-lettered anyway)",
                self.route.name,
            )

    def _settle(self, sent: list[tuple[Message, Confirmation, str]], unsent: list[Message]) -> None:
        """Ack the originals of confirmed copies; requeue the others."""
        stats = self.route.stats
        by_tracker: dict[int, tuple[AckTracker, list[tuple[int, Actions]]]] = {}
        failed = 0
        outcomes = [(m, c.acked, kind) for m, c, kind in sent]
        outcomes += [(m, False, "") for m in unsent]
        for message, confirmed, kind in outcomes:
            tracker = tracker_of(message)
            if tracker is None:
                continue
            entry = by_tracker.setdefault(id(tracker), (tracker, []))
            entry[1].append((message.delivery_tag, Actions.ACK if confirmed else Actions.REQUEUE))
            counters = stats.queue(message.queue)
            if tracker.channel.is_closed:
                counters.dropped += 1
            elif not confirmed:
                counters.requeued += 1
                failed += 1
            elif kind == "retried":
                counters.retried += 1
            else:
                counters.dead_lettered += 1
                if kind != "rejected":
                    counters.exhausted += 1
        for tracker, decisions in by_tracker.values():
            tracker.decide_many(decisions)
        if failed:
            self._pause(backoff_delay(self._failures, cap=30.0))
            self._failures += 1
        else:
            self._failures = 0
