"""Turning per-message decisions into as few AMQP frames as possible.

Delivery tags on a channel increase in delivery order. Decisions arrive out of order
(bulks finish in any order with ``concurrency > 1``; unhandled messages are requeued at
shutdown while earlier ones are still being handled). ``multiple=True`` acknowledges *every*
outstanding tag up to the one given, so it is only correct for a run of decided tags at the
head of the outstanding ones. The tracker keeps outstanding tags in order and, whenever the
head is decided, sends the longest run of equal decisions from the head as one frame:
``Basic.Ack(multiple)`` for acks, ``Basic.Nack(multiple, requeue=...)`` for rejections.

A tracker belongs to one channel. When the channel dies its deliveries are redelivered by
the broker, so decisions for them are dropped — never sent on another channel, where the same
tag number means another message.
"""

from __future__ import annotations

import logging
from collections import deque

from ...amqp import AMQPError, Channel
from ...pipeline._actions import Actions

log = logging.getLogger("trioworker.amqp")


class AckTracker:
    """Outstanding deliveries of one channel and the decisions taken for them."""

    __slots__ = ("_decided", "_pending", "_settled", "channel", "retries")

    def __init__(self, channel: Channel, *, retries: bool = False) -> None:
        self.channel = channel
        #: Whether the route has ``retry=`` (``Message.retry()`` is allowed).
        self.retries = retries
        self._pending: deque[int] = deque()
        self._decided: dict[int, Actions] = {}
        # Tags settled out of order (one frame each) but still in ``_pending``, behind an
        # undecided one; skipped when the head reaches them.
        self._settled: set[int] = set()

    @property
    def outstanding(self) -> int:
        """Deliveries received on this channel and not yet settled with the broker."""
        return len(self._pending) - len(self._settled)

    def track(self, delivery_tag: int) -> None:
        """Record a delivery (call in delivery order)."""
        self._pending.append(delivery_tag)

    def decide_many(self, decisions: list[tuple[int, Actions]]) -> int:
        """Record several decisions, then send once; return how many were dropped because
        the channel is gone (0 while it is open). What is dropped is logged with that very
        number, and the caller counts it (``trioworker_amqp_messages_dropped``)."""
        channel = self.channel
        if channel.is_closed:
            self._drop(channel.error, len(decisions))
            return len(decisions)
        self._decided.update(decisions)
        return self.flush()

    def flush(self) -> int:
        """Send every decision taken: coalesced runs at the head, single frames behind.

        Decisions behind an undecided delivery (a slow or hanging call of a route with
        ``concurrency > 1``) cannot ride on a ``multiple`` frame, yet holding them back
        would fill the prefetch window with handled messages and stall the route — and a
        connection loss would redeliver all of them. So they go out one frame each.

        Returns how many decisions were dropped because the channel is gone (usually 0).
        """
        pending = self._pending
        decided = self._decided
        settled = self._settled
        in_flight = 0  # decisions taken out of ``decided`` for the frame being sent
        try:
            while pending:
                head = pending[0]
                if head in settled:
                    pending.popleft()
                    settled.discard(head)
                    continue
                action = decided.pop(head, None)
                if action is None:
                    break
                last = pending.popleft()
                count = 1
                while pending:
                    tag = pending[0]
                    if tag in settled:
                        # Already settled on its own: a ``multiple`` frame may span it,
                        # but must not end on it (the broker would call it unknown).
                        pending.popleft()
                        settled.discard(tag)
                        continue
                    if decided.get(tag) is not action:
                        break
                    last = pending.popleft()
                    del decided[last]
                    count += 1
                in_flight = count
                self._send(last, action, multiple=count > 1)
                in_flight = 0
            if decided:
                for sent, (tag, action) in enumerate(decided.items()):
                    in_flight = -sent  # those already sent are not dropped
                    self._send(tag, action, multiple=False)
                    settled.add(tag)
                decided.clear()
                in_flight = 0
        except AMQPError as exc:
            dropped = len(decided) + in_flight
            self._drop(exc, dropped)
            return dropped
        return 0

    def _send(self, tag: int, action: Actions, *, multiple: bool) -> None:
        channel = self.channel
        if action is Actions.ACK:
            channel.basic_ack(tag, multiple=multiple)
        elif not multiple:
            channel.basic_reject(tag, requeue=action is not Actions.REJECT)
        else:
            # RETRY never gets here (the route's retrier settles those): if it did,
            # requeueing is the choice that loses nothing.
            channel.basic_nack(tag, multiple=True, requeue=action is not Actions.REJECT)

    def _drop(self, exc: AMQPError | None, dropped: int) -> None:
        if dropped:
            log.info(
                "channel %d is gone (%s): %d decisions dropped, the broker redelivers",
                self.channel.number,
                exc,
                dropped,
            )
        self._pending.clear()
        self._decided.clear()
        self._settled.clear()
