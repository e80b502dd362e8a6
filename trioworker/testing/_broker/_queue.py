"""A queue: its ready messages, its consumers, and the rules that move messages out.

Deliveries are *pushed* by the queue, synchronously, whenever something may have made one
possible — a publish, an ack that freed prefetch room, a requeue, a new consumer, a
connection whose output drained — so no task runs per message: :meth:`Queue.dispatch`
hands the head to the next consumer (round robin, as RabbitMQ does) that has room, until
none has or the queue is empty.

RabbitMQ's rules, each for a reason a client can observe:

* Requeued messages go back to the head *in their original order* (by their place in the
  queue, :attr:`Entry.seq`), marked ``redelivered``.
* TTL (``x-message-ttl``, a message's ``expiration``) is checked at the head only: a
  message behind one that does not expire waits for it (RabbitMQ's documented behaviour,
  which the framework's retry delays are built around). The broker's timer
  (:meth:`Host.schedule`) wakes it when the head's time comes, so a queue without
  consumers still dead-letters on time.
* ``x-max-length`` / ``x-max-length-bytes`` count ready messages only; ``drop-head``
  dead-letters the oldest (reason ``maxlen``), ``reject-publish`` refuses the newest (the
  publisher gets a nack in confirm mode).
* A quorum queue counts how often each message came back; past ``x-delivery-limit`` it is
  dead-lettered (reason ``delivery_limit``), and a redelivery carries ``x-delivery-count``.
* ``x-expires``: a queue unused (no consumer, no ``basic.get``, no re-declare) that long
  is deleted; ``auto_delete``: deleted when its last consumer goes.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from ...amqp import PropertyDecodeError
from ._arguments import QueueSettings
from ._content import Content, Entry, copy_properties

__all__ = ["EPSILON", "Consumer", "Host", "Queue"]

#: Expiry times are compared with this slack: a timer firing at the computed deadline
#: must find the message due despite float rounding, or it would re-arm at once forever.
EPSILON = 1e-6


class Host(Protocol):
    """What a queue needs from its vhost."""

    def now(self) -> float:
        """The broker's clock (seconds)."""
        ...

    def schedule(self, deadline: float) -> None:
        """Something in a queue expires at ``deadline`` (broker clock)."""
        ...

    def dead_letter(self, queue: Queue, entries: list[Entry], reason: str) -> None:
        """``entries`` left ``queue`` for ``reason``: dead-letter them if it says how."""
        ...

    def auto_delete(self, queue: Queue) -> None:
        """``queue`` lost its last consumer and is ``auto_delete``."""
        ...


class Consumer(Protocol):
    """A subscription, as the queue sees it (the channel implements it)."""

    tag: str

    def can_take(self) -> bool:
        """Whether a delivery may be sent now (prefetch room, connection not backed up)."""
        ...

    def deliver(self, queue: Queue, entry: Entry) -> None:
        """Send ``entry`` (already taken off the queue)."""
        ...

    def queue_deleted(self, queue: Queue) -> None:
        """The queue was deleted: the subscription ends (``basic.cancel`` from the broker)."""
        ...


class Queue:
    """One queue of a vhost."""

    def __init__(
        self,
        host: Host,
        name: str,
        vhost: str,
        *,
        durable: bool,
        auto_delete: bool,
        owner: object | None,
        arguments: Mapping[str, Any],
        settings: QueueSettings,
    ) -> None:
        self.host = host
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.auto_delete = auto_delete
        #: The connection an exclusive queue belongs to (``None``: not exclusive).
        self.owner = owner
        self.arguments = dict(arguments)
        self.settings = settings
        self.ready: deque[Entry] = deque()
        self.ready_bytes = 0
        self.consumers: list[Consumer] = []
        #: An exclusive consumer holds the queue alone.
        self.exclusive_consumer = False
        self.unacked = 0
        self.deleted = False
        self.acked = self.rejected = self.requeued = self.dead_lettered = self.expired = 0
        self._seq = 0
        self._next = 0  # round robin: the consumer to try first
        self._dispatching = False
        self._had_consumer = False
        self._unused_since = host.now()

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} unacked={self.unacked}>"

    # --------------------------------------------------------------- publishing

    def would_reject(self, size: int) -> bool:
        """``reject-publish`` overflow: the queue is full, a new message is refused."""
        s = self.settings
        if not s.reject_publish:
            return False
        return (s.max_length is not None and len(self.ready) >= s.max_length) or (
            s.max_length_bytes is not None and self.ready_bytes + size > s.max_length_bytes
        )

    def publish(self, content: Content, message_ttl: float | None, now: float) -> None:
        """Enqueue a routed message (``message_ttl``: its ``expiration``, seconds)."""
        ttl = self.settings.message_ttl
        if message_ttl is not None and (ttl is None or message_ttl < ttl):
            ttl = message_ttl
        self._seq += 1
        entry = Entry(content, self._seq, None if ttl is None else now + ttl)
        self.ready.append(entry)
        self.ready_bytes += len(content.body)
        if self.consumers:
            # Delivery is tried before expiry: a TTL of 0 reaches a waiting consumer.
            self.dispatch(fresh=entry)
        s = self.settings
        if s.max_length is not None or s.max_length_bytes is not None:
            self._drop_over_limit()
        if entry.expires_at is not None:
            self.expire(now)  # a TTL of 0 expires now unless a consumer took it
            self._head_changed()

    # --------------------------------------------------------------- delivering

    def dispatch(self, fresh: Entry | None = None) -> None:
        """Deliver from the head while a consumer can take a message (``fresh``: one just
        published, offered to a consumer even if its TTL is already up)."""
        ready = self.ready
        consumers = self.consumers
        if not ready or not consumers or self._dispatching:
            return
        self._dispatching = True
        host = self.host
        single = self.settings.single_active_consumer
        now = None
        try:
            while ready:
                entry = ready[0]
                if entry.expires_at is not None and entry is not fresh:
                    if now is None:
                        now = host.now()
                    if entry.expires_at <= now + EPSILON:
                        self.expire(now)
                        continue
                count = len(consumers)
                if count == 1 or single:
                    chosen = consumers[0]
                    if not chosen.can_take():
                        break
                else:
                    start = self._next % count
                    for i in range(count):
                        chosen = consumers[(start + i) % count]
                        if chosen.can_take():
                            self._next = start + i + 1
                            break
                    else:
                        break
                ready.popleft()
                self.ready_bytes -= len(entry.content.body)
                chosen.deliver(self, entry)
        finally:
            self._dispatching = False
        self._head_changed()

    def get(self) -> Entry | None:
        """``basic.get``: the head, if any (expired messages go first)."""
        self.touch()
        self.expire(self.host.now())
        if not self.ready:
            return None
        entry = self.ready.popleft()
        self.ready_bytes -= len(entry.content.body)
        self._head_changed()
        return entry

    # ---------------------------------------------------------------- settling

    def settle(self, count: int, *, acked: bool) -> None:
        """``count`` deliveries were acked (or rejected, already dead-lettered)."""
        self.unacked -= count
        if acked:
            self.acked += count
        else:
            self.rejected += count

    def reject(self, entries: list[Entry]) -> None:
        """Rejected without requeue: dead-lettered (reason ``rejected``) or dropped."""
        self.settle(len(entries), acked=False)
        if not self.deleted:
            self.host.dead_letter(self, entries, "rejected")

    def requeue(self, entries: list[Entry], *, unacked: bool = True) -> None:
        """Put delivered messages back at the head, in their original order."""
        if unacked:
            self.unacked -= len(entries)
        if self.deleted:
            return
        self.requeued += len(entries)
        back: list[Entry] = []
        over: list[Entry] = []
        limit = self.settings.delivery_limit
        quorum = self.settings.kind == "quorum"
        for entry in entries:
            entry.redelivered = True
            if quorum:
                entry.returns += 1
                if limit is not None and entry.returns > limit:
                    over.append(entry)
                    continue
                entry.content = _with_delivery_count(entry.content, entry.returns)
            back.append(entry)
        if back:
            back.sort(key=_seq)
            ready = self.ready
            front: list[Entry] = []
            last = back[-1].seq
            while ready and ready[0].seq < last:
                front.append(ready.popleft())
            merged = list(heapq.merge(front, back, key=_seq)) if front else back
            ready.extendleft(reversed(merged))
            self.ready_bytes += sum(len(e.content.body) for e in back)
        if over:
            self.host.dead_letter(self, over, "delivery_limit")
        if self.consumers:
            self.dispatch()
        self.expire(self.host.now())
        self._head_changed()

    # ------------------------------------------------------------------- limits

    def _drop_over_limit(self) -> None:
        s = self.settings
        ready = self.ready
        dropped: list[Entry] = []
        while ready and (
            (s.max_length is not None and len(ready) > s.max_length)
            or (s.max_length_bytes is not None and self.ready_bytes > s.max_length_bytes)
        ):
            entry = ready.popleft()
            self.ready_bytes -= len(entry.content.body)
            dropped.append(entry)
        if dropped:
            self.host.dead_letter(self, dropped, "maxlen")
            self._head_changed()

    def expire(self, now: float) -> None:
        """Dead-letter (reason ``expired``) the messages at the head whose time has come."""
        ready = self.ready
        expired: list[Entry] = []
        while ready:
            at = ready[0].expires_at
            if at is None or at > now + EPSILON:
                break
            entry = ready.popleft()
            self.ready_bytes -= len(entry.content.body)
            expired.append(entry)
        if expired:
            self.expired += len(expired)
            self.host.dead_letter(self, expired, "expired")

    def deadline(self) -> float | None:
        """When something happens to this queue by itself: its head expires, or the queue
        (``x-expires``, unused) is deleted."""
        at = None
        if self.ready:
            at = self.ready[0].expires_at
        expires = self.settings.expires
        if expires is not None and not self.consumers:
            unused = self._unused_since + expires
            at = unused if at is None else min(at, unused)
        return at

    def unused_expired(self, now: float) -> bool:
        """``x-expires``: unused for that long, the queue is to be deleted."""
        expires = self.settings.expires
        return (
            expires is not None
            and not self.consumers
            and self._unused_since + expires <= now + EPSILON
        )

    def touch(self) -> None:
        """The queue was used (declared, got from): ``x-expires`` counts from now."""
        self._unused_since = self.host.now()
        if self.settings.expires is not None and not self.consumers:
            self.host.schedule(self._unused_since + self.settings.expires)

    def _head_changed(self) -> None:
        ready = self.ready
        if ready and ready[0].expires_at is not None:
            self.host.schedule(ready[0].expires_at)

    # ---------------------------------------------------------------- consumers

    def add_consumer(self, consumer: Consumer, *, exclusive: bool) -> None:
        self.consumers.append(consumer)
        self.exclusive_consumer = exclusive
        self._had_consumer = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Forget ``consumer``; an auto-delete queue goes with its last one."""
        if consumer not in self.consumers:
            return
        self.consumers.remove(consumer)
        self.exclusive_consumer = False
        if not self.consumers:
            self.touch()
            if self.auto_delete and self._had_consumer and not self.deleted:
                self.host.auto_delete(self)
        else:
            self.dispatch()  # single active consumer: the next one takes over

    # ------------------------------------------------------------------ removal

    def purge(self) -> int:
        """Drop every ready message (not dead-lettered); return how many."""
        count = len(self.ready)
        self.ready.clear()
        self.ready_bytes = 0
        return count

    def mark_deleted(self) -> list[Consumer]:
        """The queue is gone: drop its ready messages; return its consumers to cancel."""
        self.deleted = True
        self.purge()
        consumers, self.consumers = self.consumers, []
        return consumers


def _seq(entry: Entry) -> int:
    return entry.seq


def _with_delivery_count(content: Content, count: int) -> Content:
    """A quorum queue's redelivery carries ``x-delivery-count`` (RabbitMQ 3.10)."""
    try:
        props = copy_properties(content.properties)
    except PropertyDecodeError:
        return content  # headers it cannot read: delivered as they came

    headers = props.headers if props.headers is not None else {}
    headers["x-delivery-count"] = count
    props.headers = headers
    return content.replace(props)
