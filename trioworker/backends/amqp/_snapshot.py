"""AMQP handlers in a process pool: messages travel as snapshots, decisions come back.

::

    app (trio)                                     worker process
    Message ─ snapshot() ─ plain data ──pickle──▶  WorkerMessage (a Message, no tracker)
                                                   handler(messages) → accept/reject/retry,
                                                   trioworker.pools.publish(...)
    apply decisions ◀── publish the outbox ◀─────  WorkerReply: decisions, outbox, result/error

A :class:`~._message.Message` holds its channel's acknowledgement tracker, which must not
(and cannot) leave the app. Its delivery is plain data, so the worker rebuilds an
equivalent message from a :class:`Snapshot` and the handler uses it as usual:
``m.json()`` (with the route's codecs), ``m.headers``, ``m.attempt``, the per-message
decisions. What the handler decided comes back per message and is applied to the real
messages by their public methods, after the handler's outbox was published (confirmed):
then the route's ``on_success``/``on_exception`` default applies to the rest, as for any
route. The handler's exception comes back too (``pipeline/_processes.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...amqp import Delivery
from ...pipeline._actions import Actions
from ...pipeline._handlers import adapt, handler_name
from ...pipeline._processes import raise_or_return, travelling
from ._decoding import Decoding
from ._message import Message, tracker_of, use_decoding
from ._outbox import Outgoing, collecting, send_outbox, stop_collecting

if TYPE_CHECKING:
    from ...codecs import Codec
    from ...pipeline._pools import Pool
    from ._sending import Sending

__all__ = [
    "Snapshot",
    "WorkerMessage",
    "WorkerReply",
    "pooled_call",
    "process_call",
    "run_in_worker",
]

#: A message's decision as it travels: the action and, for ``RETRY``, the delay asked for.
Decision = tuple[Actions, float | None] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """A delivery as plain data: what a worker needs to rebuild its message."""

    queue: str
    channel: int
    consumer_tag: str | None
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    body: bytes
    raw_properties: bytes
    #: Whether the route has ``retry=`` (``m.retry()`` is refused in the worker otherwise).
    retries: bool


def snapshot(message: Message) -> Snapshot:
    """The plain-data copy of ``message`` that travels to a worker."""
    d = message.delivery
    tracker = tracker_of(message)
    return Snapshot(
        message.queue,
        d.channel,
        d.consumer_tag,
        d.delivery_tag,
        d.redelivered,
        d.exchange,
        d.routing_key,
        d.body,
        d.raw_properties,
        tracker is not None and tracker.retries,
    )


class WorkerMessage(Message):
    """The message a handler sees in a worker process: a :class:`Message` without a
    channel, which records the decisions for the app to apply."""

    __slots__ = ("_retries", "retry_delay")

    def __init__(self, snap: Snapshot) -> None:
        delivery = Delivery(
            snap.channel,
            snap.consumer_tag,
            snap.delivery_tag,
            snap.redelivered,
            snap.exchange,
            snap.routing_key,
            snap.body,
            snap.raw_properties,
        )
        super().__init__(delivery, snap.queue)
        self._retries = snap.retries
        #: The ``delay`` of the last :meth:`retry` call.
        self.retry_delay: float | None = None

    def retry(self, delay: float | None = None) -> None:
        if not self._retries:
            raise RuntimeError(
                f"message from {self.queue!r}: retry() needs a route with retry=Retry(...)"
            )
        super().retry(delay)
        self.retry_delay = delay

    def travelling_decision(self) -> Decision:
        """What the handler decided for this message, as it travels back."""
        decision = self.decision
        if decision is None:
            return None
        return (decision, self.retry_delay if decision is Actions.RETRY else None)


@dataclasses.dataclass(slots=True)
class WorkerReply:
    """What comes back from one call: a decision per message (in the order they were
    sent), the outbox, and the handler's value or exception."""

    decisions: list[Decision]
    outbox: list[Outgoing]
    result: Any
    error: Any  # pipeline._processes' travelling exception, or None


@dataclasses.dataclass(frozen=True, slots=True)
class _One:
    """An argument that was one message."""

    snapshot: Snapshot


@dataclasses.dataclass(frozen=True, slots=True)
class _Many:
    """An argument that was a list of messages."""

    snapshots: list[Snapshot]


def _pack(arg: Any, originals: list[Message]) -> Any:
    if isinstance(arg, Message):
        originals.append(arg)
        return _One(snapshot(arg))
    if isinstance(arg, list) and arg and all(isinstance(m, Message) for m in arg):
        originals.extend(arg)
        return _Many([snapshot(m) for m in arg])
    return arg  # a typed body (a model), or anything else that pickles


def _unpack(arg: Any, messages: list[WorkerMessage], decoding: Decoding | None) -> Any:
    def rebuild(snap: Snapshot) -> WorkerMessage:
        message = WorkerMessage(snap)
        if decoding is not None:
            use_decoding(message, decoding)
        messages.append(message)
        return message

    if isinstance(arg, _One):
        return rebuild(arg.snapshot)
    if isinstance(arg, _Many):
        return [rebuild(s) for s in arg.snapshots]
    return arg


def run_in_worker(handler: Callable[..., Any], decoding: Decoding | None, *packed: Any) -> Any:
    """The job a worker process runs: rebuild the messages, call ``handler``, and report
    the decisions, the outbox and the outcome (never raises for the handler's errors:
    the decisions it made before raising still count)."""
    messages: list[WorkerMessage] = []
    args = [_unpack(arg, messages, decoding) for arg in packed]
    outbox: list[Outgoing] = []
    token = collecting(outbox)
    result: Any = None
    error: Any = None
    try:
        result = handler(*args)
    except BaseException as exc:
        error = travelling(exc)
    finally:
        stop_collecting(token)
    return WorkerReply([m.travelling_decision() for m in messages], outbox, result, error)


def _apply(message: Message, decision: Decision) -> None:
    if decision is None:
        return
    action, delay = decision
    if action is Actions.ACK:
        message.accept()
    elif action is Actions.REQUEUE:
        message.reject(requeue=True)
    elif action is Actions.REJECT:
        message.reject(requeue=False)
    else:
        message.retry(delay)


def process_call(
    handler: Callable[..., Any],
    pool: Pool,
    *,
    publish: Callable[..., Awaitable[None]],
    decoding: Decoding | None = None,
) -> Callable[..., Awaitable[Any]]:
    """An async callable running ``handler`` in process pool ``pool``: its ``Message`` and
    ``list[Message]`` arguments travel as snapshots, other arguments (typed bodies) as
    they are; the reply's outbox is published through ``publish``, then its decisions are
    applied, then the handler's value is returned or its exception raised.

    If the outbox cannot be published, no decision is applied and the error is raised:
    the route's ``on_exception`` applies to the whole bulk (by default the messages are
    requeued, handled again, and publish again: at least once).
    """
    if decoding is not None and decoding.is_default:
        decoding = None
    if decoding is not None:
        try:
            pickle.dumps(decoding)
        except Exception as exc:
            raise TypeError(
                f"the route's codecs cannot travel to pool {pool.name!r}'s workers: {exc}"
            ) from exc
    job = functools.partial(run_in_worker, handler, decoding)

    async def call(*args: Any) -> Any:
        originals: list[Message] = []
        packed = [_pack(arg, originals) for arg in args]
        reply: WorkerReply = await pool.run(job, *packed)
        try:
            await send_outbox(reply.outbox, publish)
        except Exception as exc:
            exc.add_note(
                f"publishing the {len(reply.outbox)} message(s) of the handler's outbox "
                "failed: none of its decisions were applied"
            )
            raise
        for message, decision in zip(originals, reply.decisions, strict=True):
            _apply(message, decision)
        if reply.error is not None:
            raise_or_return(reply.error)
        return reply.result

    return call


def pooled_call(
    backend: Sending,
    pool: str | None,
    handler: Callable[..., Any],
    route: str | None,
    codec: str | Codec,
    accept: Sequence[str | Codec],
) -> Callable[..., Awaitable[Any]] | None:
    """How a route of ``backend`` with ``pool=`` calls ``handler`` (``None`` without a
    pool): in that pool's threads, or in its worker processes with messages as snapshots
    (:func:`process_call`; the outbox goes through ``backend.publish``). Refuses, here at
    registration, an unknown pool and a handler the pool cannot run (the error names the
    route: ``route``, or the handler's name)."""
    if pool is None:
        return None
    named = backend.app.pools.get(pool)
    named.check_handler(handler, f"route {route or handler_name(handler)!r}")
    if named.kind == "process":
        decoding = Decoding(codec, accept)
        return process_call(handler, named, publish=backend.publish, decoding=decoding)
    return adapt(handler, pool=named)
