"""The message a route handler receives."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...amqp import AMQPError, PropertyDecodeError
from ...amqp.protocol import UNKNOWN_OFFSET, stream_offset_of
from ...codecs import CodecError
from ...pipeline._actions import Actions
from ._decoding import DEFAULT_DECODING, Decoding
from ._log_fields import message_fields

if TYPE_CHECKING:
    from ...amqp import BasicProperties, Channel, Delivery
    from ._acks import AckTracker
    from ._route_stats import RouteStats

log = logging.getLogger("trioworker.amqp")

#: The header counting handlings (see :attr:`Message.attempt` and docs/retries.md).
ATTEMPT_HEADER = "x-trioworker-attempt"

__all__ = [
    "ATTEMPT_HEADER",
    "OFFSET_HEADER",
    "InvalidMessageBody",
    "Message",
    "delivery_channel",
    "delivery_offset",
    "requeue_unhandled",
    "settle",
    "stream_offset",
    "tracker_of",
    "use_decoding",
]


class InvalidMessageBody(ValueError):
    """The body could not be decoded as the handler asked (e.g. it is not JSON)."""


#: The header RabbitMQ puts on every delivery from a stream: the message's offset.
OFFSET_HEADER = "x-stream-offset"


def delivery_offset(headers: dict[str, Any] | None) -> int | None:
    """The stream offset a delivery's headers carry (``None``: not from a stream)."""
    offset = headers.get(OFFSET_HEADER) if headers else None
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else None


def stream_offset(delivery: Delivery) -> int | None:
    """The stream offset of a delivery, read from its raw properties without decoding
    them (see ``stream_offset_of``); ``None`` if it has none, or if its properties cannot
    be decoded (the handler meets that error, as for any message)."""
    offset = stream_offset_of(delivery.raw_properties)
    if offset != UNKNOWN_OFFSET:
        return offset
    try:
        return delivery_offset(delivery.properties.headers)
    except PropertyDecodeError:
        return None


class Message:
    """One AMQP delivery, as seen by a handler.

    The decision for the message is the route's default (``on_success`` if the handler
    returns, ``on_exception`` if it raises) unless the handler calls :meth:`accept` or
    :meth:`reject` on it — a per-message call always wins.
    """

    # ``_retry_delay`` is set only by :meth:`retry` (read only for a ``RETRY`` decision), so
    # building a message costs no more than before.
    # ``_decoding`` is set only by routes that decode other than JSON alone (read with a
    # default, so the hot path of plain routes never pays for it).
    __slots__ = (
        "_decision",
        "_decoding",
        "_delivery",
        "_json",
        "_retry_delay",
        "_tracker",
        "queue",
    )
    _decoding: Decoding

    def __init__(self, delivery: Delivery, queue: str, tracker: AckTracker | None = None) -> None:
        self._delivery = delivery
        self.queue = queue
        self._tracker = tracker
        self._decision: Actions | None = None
        self._json: Any = _UNSET

    def __repr__(self) -> str:
        return (
            f"<Message queue={self.queue!r} delivery_tag={self.delivery_tag} "
            f"routing_key={self.routing_key!r} body={len(self.body)} bytes>"
        )

    # -------------------------------------------------------------- content

    @property
    def body(self) -> bytes:
        """The raw body."""
        return self._delivery.body

    def json(self) -> Any:
        """The body decoded (cached): as JSON, or with the codec its
        ``content_type``/``content_encoding`` name when the route accepts that codec
        (``codec=``, ``accept=``; see docs/rpc.md). Decoding is bounded by the codec's
        ``max_size`` (16 MiB by default, after decompression).

        A body that does not decode fails *this message only*: it is marked ``REJECT`` (it
        can never succeed, so requeueing it would loop forever; with a dead-letter exchange
        it is kept for inspection) and :class:`InvalidMessageBody` is raised. A handler that
        catches it goes on with the other messages of its bulk.
        """
        if self._json is _UNSET:
            decoding = getattr(self, "_decoding", DEFAULT_DECODING)
            try:
                self._json = decoding.decode(self)
            except (CodecError, AMQPError) as exc:
                if self._decision is None:
                    self._decision = Actions.REJECT
                log.warning(
                    "message %d from queue %r does not decode (%s): rejected",
                    self.delivery_tag,
                    self.queue,
                    exc,
                    extra=message_fields(self),
                )
                raise InvalidMessageBody(
                    f"body of message {self.delivery_tag} from {self.queue!r} does not "
                    f"decode: {exc}"
                ) from exc
        return self._json

    @property
    def properties(self) -> BasicProperties:
        """The AMQP properties (decoded on first access; see ``PropertyDecodeError``)."""
        return self._delivery.properties

    @property
    def headers(self) -> dict[str, Any]:
        """The ``headers`` table of the properties (empty if none)."""
        return dict(self._delivery.properties.headers or {})

    @property
    def redelivered(self) -> bool:
        """True if the broker delivered this message before (to anyone)."""
        return self._delivery.redelivered

    @property
    def routing_key(self) -> str:
        """The routing key it was published with."""
        return self._delivery.routing_key

    @property
    def exchange(self) -> str:
        """The exchange it was published to ("" for the default exchange)."""
        return self._delivery.exchange

    @property
    def delivery_tag(self) -> int:
        """The delivery tag (valid only on the channel that delivered it)."""
        return self._delivery.delivery_tag

    @property
    def delivery(self) -> Delivery:
        """The underlying client delivery."""
        return self._delivery

    # ------------------------------------------------------------- decision

    def accept(self) -> None:
        """Acknowledge this message whatever the handler's outcome."""
        self._decision = Actions.ACK

    def reject(self, requeue: bool = True) -> None:
        """Reject this message: requeued by default, dead-lettered with ``requeue=False``."""
        self._decision = Actions.REQUEUE if requeue else Actions.REJECT

    def retry(self, delay: float | None = None) -> None:
        """Handle this message again later, whatever the handler's outcome: one more attempt
        of the route's ``retry=`` policy, after its delay — or after ``delay`` seconds (each
        distinct value is a delay queue, declared when first used). Once the attempts are
        used up the message goes to the dead-letter queue instead. See docs/retries.md.

        Raises ``RuntimeError`` on a route without ``retry=``.
        """
        tracker = self._tracker
        if tracker is not None and not tracker.retries:
            raise RuntimeError(
                f"message from {self.queue!r}: retry() needs a route with retry=Retry(...)"
            )
        if delay is not None and (not 0 <= delay < 2**31 / 1000 or delay != delay):
            raise ValueError(f"retry(delay={delay!r}): seconds >= 0")
        self._retry_delay = delay
        self._decision = Actions.RETRY

    @property
    def attempt(self) -> int:
        """Which handling of this message this is: 1 on the first delivery, +1 for every
        retry (our own header, ``x-trioworker-attempt``; requeues and redeliveries do not
        count)."""
        headers = self._delivery.properties.headers
        if headers:
            value = headers.get(ATTEMPT_HEADER)
            if isinstance(value, int) and value >= 1:
                return value
        return 1

    @property
    def stream_offset(self) -> int | None:
        """The message's offset in the stream it was read from (``x-stream-offset``), or
        ``None`` for a message from a queue. Store it to resume after a restart:
        ``stream_offset=stored + 1`` (docs/amqp.md, "Streams")."""
        return delivery_offset(self._delivery.properties.headers)

    @property
    def decision(self) -> Actions | None:
        """The per-message decision, if the handler made one."""
        return self._decision


def settle(bulk: list[Message], default: Actions, stats: RouteStats) -> None:
    """Send each message's decision (its own, else ``default``) to its channel's tracker,
    and count them per queue.

    Counting stays off the per-message path: a message taking the default only lands in
    its group's list; the few with their own decision are also kept aside, so each group is
    counted with one subtraction. Decisions for a channel that is gone were not sent (the
    broker redelivers those messages): they count as ``dropped``, not as acks.
    """
    by_tracker: dict[int, tuple[AckTracker, list[tuple[int, Actions]], str, list[Actions]]] = {}
    for message in bulk:
        tracker = message._tracker
        if tracker is None:
            continue
        entry = by_tracker.get(id(tracker))
        if entry is None:
            entry = by_tracker[id(tracker)] = (tracker, [], message.queue, [])
        decision = message._decision
        if decision is None:
            decision = default
        else:
            entry[3].append(decision)
        entry[1].append((message._delivery.delivery_tag, decision))
    for tracker, decisions, queue, own in by_tracker.values():
        dropped = tracker.decide_many(decisions)  # logged with this same number
        counters = stats.queue(queue)
        if dropped:
            counters.dropped += dropped
            continue
        counters.count(default, len(decisions) - len(own))
        for action in own:
            counters.count(action)


def requeue_unhandled(bulk: list[Message], stats: RouteStats) -> None:
    """Return messages no handler finished (shutdown, a cancelled call) to their queue, as
    if never taken: a decision the handler made before it was cancelled does not count."""
    for message in bulk:
        message._decision = None
    settle(bulk, Actions.REQUEUE, stats)


def delivery_channel(message: Message) -> Channel | None:
    """The channel ``message`` came on (RPC replies go out on it, before the ack), or
    ``None`` for a message that came from no channel."""
    tracker = message._tracker
    return None if tracker is None else tracker.channel


def tracker_of(message: Message) -> AckTracker | None:
    """The acknowledgement tracker of the channel ``message`` came on (the retrier settles
    originals through it once their copies are confirmed)."""
    return message._tracker


def use_decoding(message: Message, decoding: Decoding) -> None:
    """Make ``message.json()`` decode as its route does (its codec and accepted decoders,
    with their size limits), instead of plain JSON."""
    message._decoding = decoding


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()
