"""What the core remembers about one open (or opening, or closing) channel number.

A plain record: the receiving side (:mod:`._receive`), content assembly
(:mod:`._content`) and the commands (:mod:`._connection`) all read and write it, and it
imports nothing of theirs, so each of them can import it without a cycle.
"""

from __future__ import annotations

from typing import Any

from ._confirms import Confirms
from ._state import ChannelState


class ChannelRecord:
    """The core's state for one channel number."""

    __slots__ = (
        "awaiting",
        "confirms",
        "content",
        "content_parts",
        "content_remaining",
        "content_size",
        "number",
        "stale",
        "state",
    )

    def __init__(self, number: int) -> None:
        self.number = number
        self.state = ChannelState.OPENING
        #: pamqp names of the replies allowed for the outstanding synchronous request.
        self.awaiting: list[str] | None = None
        #: Content assembly (:mod:`._content`): ``(method id, *fields)`` of the method that
        #: announced content, ``None`` when no message is being assembled.
        self.content: tuple[Any, ...] | None = None
        self.content_size = 0
        self.content_remaining = -1  # -1: waiting for the header frame
        self.content_parts: list[bytes] = []
        #: Publisher confirms, from ``Confirm.SelectOk`` on; ``None`` before.
        self.confirms: Confirms | None = None
        #: Reopened after the broker closed this number: until ``OpenOk``, frames of the
        #: previous incarnation may still arrive and are discarded.
        self.stale = False
