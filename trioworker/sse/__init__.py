"""Server-Sent Events: ``app.sse.consume(url)`` streams batched into handlers.

- :mod:`._parser`: the sans-IO ``text/event-stream`` parser (bytes in, events out).
- :mod:`._stream`: one stream's reconnecting httpx reader feeding a batcher.
- :mod:`._backend`: ``app.sse``, the backend the app runs.
"""

from ._backend import SSEBackend
from ._event import Event
from ._parser import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_LENGTH, EventParser, SSEProtocolError
from ._stream import ErrorHook, SSEStream, StreamRun

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "ErrorHook",
    "Event",
    "EventParser",
    "SSEBackend",
    "SSEProtocolError",
    "SSEStream",
    "StreamRun",
]
