"""What becomes of a message once its handler is done."""

from __future__ import annotations

import enum


class Actions(enum.Enum):
    """The decision for one message.

    * ``ACK`` — done; the broker forgets it.
    * ``REJECT`` — reject *without* requeue: dead-lettered if the queue has a dead-letter
      exchange, dropped otherwise. For messages that will never succeed.
    * ``REQUEUE`` — reject *with* requeue: the broker delivers it again (to this worker or
      another), flagged ``redelivered``. For transient failures.
    * ``RETRY`` — handle it again later: a confirmed copy goes to a delay queue and comes
      back after the route's ``Retry`` delay, counting one attempt; after the last attempt
      it is dead-lettered (docs/retries.md). The default ``on_exception`` of a route with
      ``retry=``; needs one.
    """

    ACK = "ack"
    REJECT = "reject"
    REQUEUE = "requeue"
    RETRY = "retry"
