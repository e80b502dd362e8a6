"""One channel on the broker's side: deliveries going out, acks coming in.

Publishes coming in are :class:`~._publishes.Publishes`' (the base class).

* **Delivering**: a :class:`QueueConsumer` takes a delivery while it has prefetch room
  (RabbitMQ's per-consumer ``basic.qos``: the limit in force when it subscribed) and the
  connection's output is not backed up; delivery tags count up per channel.
* **Acknowledging**: ack, nack and reject by tag (``multiple``: every tag up to it; tag 0:
  all), 406 *unknown delivery tag* for one that is not outstanding (acked twice, say).
  Requeued messages go back to their queue's head, redelivered; a channel that closes
  (or whose connection dies) requeues every delivery it still holds.
* **Direct reply-to**: a no-ack consumer of ``amq.rabbitmq.reply-to`` gives the channel a
  hidden queue, which the default exchange routes ``amq.rabbitmq.reply-to.<token>`` to.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable

from pamqp import commands

from ._arguments import QueueSettings
from ._content import Content, Entry
from ._errors import precondition_failed
from ._frames import encode_content, encode_deliver
from ._publishes import Output, Publishes
from ._queue import Queue
from ._routing import REPLY_PREFIX
from ._vhost import VHost

__all__ = ["QueueConsumer", "ServerChannel"]

Record = tuple[Queue, Entry, "QueueConsumer | None"]


class QueueConsumer:
    """A ``basic.consume`` subscription (the queue's :class:`~._queue.Consumer`)."""

    __slots__ = ("channel", "no_ack", "prefetch", "queue", "tag", "tag_field", "unacked")

    def __init__(
        self, channel: ServerChannel, queue: Queue, tag: str, no_ack: bool, prefetch: int
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        raw = tag.encode()
        self.tag_field = bytes((len(raw),)) + raw
        self.no_ack = no_ack
        self.prefetch = prefetch
        self.unacked = 0

    def can_take(self) -> bool:
        return (self.no_ack or not self.prefetch or self.unacked < self.prefetch) and (
            self.channel.output.writable
        )

    def deliver(self, queue: Queue, entry: Entry) -> None:
        self.channel.deliver(self, queue, entry)

    def queue_deleted(self, queue: Queue) -> None:
        self.channel.consumer_gone(self)


class ServerChannel(Publishes):
    """The broker's state for one open channel of a connection."""

    def __init__(
        self,
        number: int,
        output: Output,
        vhost: VHost,
        owner: object,
        *,
        max_message_size: int,
        record: Callable[[Content], None],
    ) -> None:
        super().__init__(number, output, vhost, max_message_size=max_message_size, record=record)
        self.owner = owner
        self.consumers: dict[str, QueueConsumer] = {}
        self.prefetch = 0
        #: The last queue declared on the channel: what an empty queue name means.
        self.last_queue = ""
        self.unacked: dict[int, Record] = {}
        self._order: deque[int] = deque()
        self._tag = 0

    # --------------------------------------------------------- direct reply-to

    def consume_replies(self, tag: str, no_ack: bool) -> QueueConsumer:
        """``basic.consume`` of ``amq.rabbitmq.reply-to``."""
        if not no_ack:
            raise precondition_failed("reply consumer cannot acknowledge")
        if self._reply_queue is not None:
            raise precondition_failed("reply consumer already set")
        name = f"{REPLY_PREFIX}{secrets.token_urlsafe(12)}"
        queue = Queue(
            self.vhost,
            name,
            self.vhost.name,
            durable=False,
            auto_delete=False,
            owner=self.owner,
            arguments={},
            settings=QueueSettings(),
        )
        self._reply_queue = queue
        self.vhost.reply_queues[name] = queue
        return self.subscribe(queue, tag, no_ack=True, exclusive=True)

    def _drop_reply_queue(self) -> None:
        queue, self._reply_queue = self._reply_queue, None
        if queue is not None:
            self.vhost.reply_queues.pop(queue.name, None)
            queue.mark_deleted()

    # -------------------------------------------------------------- consumers

    def subscribe(self, queue: Queue, tag: str, *, no_ack: bool, exclusive: bool) -> QueueConsumer:
        consumer = QueueConsumer(self, queue, tag, no_ack, self.prefetch)
        self.consumers[tag] = consumer
        queue.add_consumer(consumer, exclusive=exclusive)
        return consumer

    def cancel(self, tag: str) -> None:
        """``basic.cancel``: its unacked deliveries stay the client's to settle."""
        consumer = self.consumers.pop(tag, None)
        if consumer is None:
            return
        if consumer.queue is self._reply_queue:
            self._drop_reply_queue()
        else:
            consumer.queue.remove_consumer(consumer)

    def consumer_gone(self, consumer: QueueConsumer) -> None:
        """Its queue was deleted: RabbitMQ's consumer cancel notification."""
        if self.consumers.pop(consumer.tag, None) is not None and self.output.cancel_notify:
            self.send(commands.Basic.Cancel(consumer_tag=consumer.tag, nowait=True))

    def deliver(self, consumer: QueueConsumer, queue: Queue, entry: Entry) -> None:
        """Send one delivery (the hot path)."""
        self._tag = tag = self._tag + 1
        content = entry.content
        number = self.number
        self.output.send(
            encode_deliver(
                number,
                consumer.tag_field,
                tag,
                entry.redelivered,
                content.exchange,
                content.routing_key,
            )
            + encode_content(number, content, self.output.frame_max)
        )
        if consumer.no_ack:
            queue.acked += 1
        else:
            self.unacked[tag] = (queue, entry, consumer)
            self._order.append(tag)
            consumer.unacked += 1
            queue.unacked += 1

    def take_delivery_tag(self, queue: Queue, entry: Entry, no_ack: bool) -> int:
        """A ``basic.get`` delivery: its tag (tracked as unacked unless ``no_ack``)."""
        self._tag = tag = self._tag + 1
        if no_ack:
            queue.acked += 1
        else:
            self.unacked[tag] = (queue, entry, None)
            self._order.append(tag)
            queue.unacked += 1
        return tag

    # ------------------------------------------------------------ settling

    def _take(self, tag: int, multiple: bool) -> list[Record]:
        unacked = self.unacked
        order = self._order
        if multiple and tag == 0:
            records = [unacked[t] for t in order if t in unacked]
            unacked.clear()
            order.clear()
            return records
        if tag not in unacked:
            raise precondition_failed(f"unknown delivery tag {tag}")
        if not multiple:
            records = [unacked.pop(tag)]
        else:
            records = []
            while order and order[0] <= tag:
                record = unacked.pop(order.popleft(), None)
                if record is not None:
                    records.append(record)
        while order and order[0] not in unacked:
            order.popleft()
        return records

    def settle(self, tag: int, multiple: bool, *, ack: bool, requeue: bool) -> None:
        """``basic.ack`` / ``basic.nack`` / ``basic.reject``."""
        self._settle(self._take(tag, multiple), ack=ack, requeue=requeue)

    def _settle(self, records: list[Record], *, ack: bool, requeue: bool) -> None:
        if len(records) == 1:
            queue, entry, consumer = records[0]
            if consumer is not None:
                consumer.unacked -= 1
            groups = {queue: [entry]}
        else:
            groups = {}
            for queue, entry, consumer in records:
                if consumer is not None:
                    consumer.unacked -= 1
                groups.setdefault(queue, []).append(entry)
        for queue, entries in groups.items():
            if ack:
                queue.settle(len(entries), acked=True)
                queue.dispatch()
            elif requeue:
                queue.requeue(entries)
            else:
                queue.reject(entries)
                queue.dispatch()

    def recover(self) -> None:
        """``basic.recover`` (requeue): every unacked delivery goes back to its queue."""
        records = [self.unacked[t] for t in self._order if t in self.unacked]
        self.unacked.clear()
        self._order.clear()
        self._settle(records, ack=False, requeue=True)

    def resume(self) -> None:
        """The connection's output drained: let the queues deliver what they held back."""
        for queue in {c.queue for c in self.consumers.values()}:
            queue.dispatch()

    def unacked_of(self, queue: Queue) -> list[Entry]:
        """The deliveries from ``queue`` this channel holds, in delivery order."""
        return [entry for q, entry, _ in self.unacked.values() if q is queue]

    # ------------------------------------------------------------------ end

    def release(self) -> None:
        """The channel is closing (either side) or its connection is gone: cancel its
        consumers first (so they do not get the messages back), then requeue what it
        still holds."""
        self._publish = None
        consumers = list(self.consumers.values())
        self.consumers.clear()
        for consumer in consumers:
            if consumer.queue is not self._reply_queue:
                consumer.queue.remove_consumer(consumer)
        self._drop_reply_queue()
        self.recover()
