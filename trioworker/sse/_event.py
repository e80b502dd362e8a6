"""The event a stream hands to handlers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched Server-Sent Event.

    Attributes:
        data: the ``data:`` lines of the event joined with ``"\\n"``.
        name: the ``event:`` field; ``"message"`` when the server sent none (as in browsers).
        id: the stream's last event ID when this event was dispatched. The spec makes the
            ID *persist*: an event without an ``id:`` line carries the previous one, and
            ``""`` means none was ever set (or the server reset it with an empty ``id:``).
        retry: the reconnection time in milliseconds that came in this event's block, if
            any (the stream itself keeps the latest one for its reconnects).
    """

    data: str
    name: str = "message"
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (``json.JSONDecodeError`` if it is not)."""
        return json.loads(self.data)


#: The v0 name of :class:`SSEEvent`, kept for existing code (``from trioworker import Event``);
#: new code should say ``SSEEvent``, which cannot be confused with ``trio.Event``.
Event = SSEEvent
