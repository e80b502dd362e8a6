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

from .._actions import Actions
from ..amqp import AMQPError, Channel

log = logging.getLogger("trioworker.amqp")


class AckTracker:
    """Outstanding deliveries of one channel and the decisions taken for them."""

    __slots__ = ("_decided", "_pending", "channel", "frames_sent")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._pending: deque[int] = deque()
        self._decided: dict[int, Actions] = {}
        self.frames_sent = 0

    @property
    def outstanding(self) -> int:
        """Deliveries received on this channel and not yet settled with the broker."""
        return len(self._pending)

    def track(self, delivery_tag: int) -> None:
        """Record a delivery (call in delivery order)."""
        self._pending.append(delivery_tag)

    def decide(self, delivery_tag: int, action: Actions) -> None:
        """Record the decision for one delivery and send what can be sent."""
        self._decided[delivery_tag] = action
        if self._pending and self._pending[0] == delivery_tag:
            self.flush()

    def decide_many(self, decisions: list[tuple[int, Actions]]) -> None:
        """Record several decisions, then send once."""
        self._decided.update(decisions)
        self.flush()

    def flush(self) -> None:
        """Send the decided runs at the head of the outstanding deliveries."""
        pending = self._pending
        decided = self._decided
        channel = self.channel
        try:
            while pending:
                action = decided.pop(pending[0], None)
                if action is None:
                    return
                last = pending.popleft()
                count = 1
                while pending and decided.get(pending[0]) is action:
                    last = pending.popleft()
                    del decided[last]
                    count += 1
                if action is Actions.ACK:
                    channel.basic_ack(last, multiple=count > 1)
                elif count == 1:
                    channel.basic_reject(last, requeue=action is Actions.REQUEUE)
                else:
                    channel.basic_nack(last, multiple=True, requeue=action is Actions.REQUEUE)
                self.frames_sent += 1
        except AMQPError as exc:
            self._drop(exc)

    def _drop(self, exc: AMQPError) -> None:
        if self._pending or self._decided:
            log.info(
                "channel %d is gone (%s): %d decisions dropped, the broker redelivers",
                self.channel.number,
                exc,
                len(self._pending),
            )
        self._pending.clear()
        self._decided.clear()
