"""Server-Sent Events, the library part: a sans-IO ``text/event-stream`` parser and the
event it yields. No I/O and no framework here (``app.sse`` lives in
:mod:`trioworker.backends.sse`), so the parser can be used and tested on its own.
"""

from ._event import Event, SSEEvent
from ._parser import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_LENGTH, EventParser, SSEProtocolError

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "Event",
    "EventParser",
    "SSEEvent",
    "SSEProtocolError",
]
