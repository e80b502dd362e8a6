"""Publisher confirms (RabbitMQ's ``confirm.select`` extension): one channel's bookkeeping.

Once a channel is in confirm mode the broker numbers its publishes 1, 2, 3, ... and
acknowledges (or nacks) each by that number, the delivery tag of a ``Basic.Ack`` it
sends. A ``multiple`` ack settles every outstanding number up to and including its tag;
``multiple`` with tag 0 settles everything outstanding.

Outstanding numbers are kept in a deque in publish order. The broker confirms mostly in
order, so a single ack is nearly always the leftmost number and a ``multiple`` ack pops
from the left: resolving N confirms costs O(N), never a scan of a dict or a sort.
"""

from __future__ import annotations

from collections import deque

from ._errors import COMMAND_INVALID, RemoteProtocolError


class Confirms:
    """The confirm-mode state of one channel: created by ``Confirm.SelectOk``."""

    __slots__ = ("last_seq", "returns_pending", "unconfirmed")

    def __init__(self) -> None:
        #: The sequence number of the last publish.
        self.last_seq = 0
        #: Sequence numbers published and not yet acked or nacked, ascending.
        self.unconfirmed: deque[int] = deque()
        #: (publish tag, exchange, routing key) of mandatory publishes not yet confirmed.
        self.returns_pending: deque[tuple[int, str, str]] = deque()

    def published(self, exchange: str, routing_key: str, mandatory: bool) -> int:
        """Number one more publish; return its sequence number (its confirm's tag)."""
        self.last_seq = tag = self.last_seq + 1
        self.unconfirmed.append(tag)
        if mandatory:
            self.returns_pending.append((tag, exchange, routing_key))
        return tag

    def resolve(self, tag: int, multiple: bool, channel: int) -> list[int]:
        """The sequence numbers a ``Basic.Ack``/``Basic.Nack`` settles, ascending.

        A ``multiple`` confirm settles what is outstanding up to ``tag`` (possibly nothing:
        the broker may repeat itself). A single confirm for a number that is not
        outstanding is a broker bug, raised as :class:`RemoteProtocolError`.
        """
        unconfirmed = self.unconfirmed
        if multiple:
            if tag == 0:  # spec: multiple with tag 0 means "everything outstanding"
                tags = list(unconfirmed)
                unconfirmed.clear()
                return tags
            tags = []
            while unconfirmed and unconfirmed[0] <= tag:
                tags.append(unconfirmed.popleft())
            return tags
        if unconfirmed and unconfirmed[0] == tag:
            unconfirmed.popleft()
            return [tag]
        try:
            unconfirmed.remove(tag)
        except ValueError:
            raise RemoteProtocolError(
                f"confirm for unknown delivery tag {tag} on channel {channel}", COMMAND_INVALID
            ) from None
        return [tag]

    def match_return(self, exchange: str, routing_key: str) -> int | None:
        """Find which mandatory publish a ``Basic.Return`` is about.

        The return does not carry the publish sequence number. The broker routes a
        channel's publishes in order and sends a return before the confirm of the same
        message, so the return is about the oldest unconfirmed mandatory publish to the
        same exchange and routing key.
        """
        pending = self.returns_pending
        unconfirmed = self.unconfirmed
        lowest = unconfirmed[0] if unconfirmed else None
        while pending and (lowest is None or pending[0][0] < lowest):
            pending.popleft()  # confirmed already: cannot be returned any more
        for i, (tag, ex, rk) in enumerate(pending):
            if ex == exchange and rk == routing_key and tag in unconfirmed:
                del pending[i]
                return tag
        return None
