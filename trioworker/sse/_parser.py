"""A sans-IO parser for ``text/event-stream``: bytes in, :class:`SSEEvent` objects out.

It implements the "interpreting an event stream" rules of the WHATWG HTML standard
(section 9.2.6, Server-sent events) and imports no I/O: the trio layer feeds it whatever
chunks the socket gave and pulls events out, so every rule below is unit-tested with plain
bytes.

- Lines end with CR, LF or CRLF. A CR is a whole line end on its own, so the parser does
  not wait to see what follows it; if the next byte (possibly the first of the next chunk)
  is LF, that LF is skipped as the second half of a CRLF.
- One UTF-8 byte-order mark at the very start of the stream is dropped.
- A blank line dispatches the event being built. An event with no ``data`` field at all is
  not dispatched (a lone ``event:`` or ``id:`` block only updates state).
- ``data``: appended, lines joined with ``"\\n"``. ``event``: the event's name.
  ``id``: sets the ID *buffer*; a value containing NUL is ignored (it could not be sent
  back in a header). The buffer becomes the stream's last event ID — what a reconnect
  sends as ``Last-Event-ID`` — only at the next blank line, so an event cut off by a
  dropped connection is not skipped by the server on the reconnect. It persists across
  events until the server sets it again. ``retry``: the reconnection time in ms, taken
  only if it is all ASCII digits. Other fields, and comment lines starting with ``:``,
  are ignored.
- ``field:value`` loses a single space after the colon; a line without a colon is a field
  with an empty value.
- A partial event at the end of the stream is discarded, which is why a parser lives for
  one connection only: start a new one (passing ``last_event_id``) after a reconnect.

Where the standard decodes leniently (replacement characters), we refuse instead, because a
worker should not act on corrupted data silently: a line that is not UTF-8 raises
:class:`SSEProtocolError`. So does a line longer than ``max_line_length`` bytes or an event
whose data exceeds ``max_event_size`` characters: without those limits a server that never
sends a newline would make us buffer without end. The error is sticky, like h11's: once
raised, every later call raises it again, because the stream's framing can no longer be
trusted — the caller drops the connection and reconnects with a fresh parser.
"""

from __future__ import annotations

import re

from ._event import SSEEvent

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "EventParser",
    "SSEProtocolError",
]

DEFAULT_MAX_LINE_LENGTH = 1024 * 1024
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"[\r\n]")
_CR = 0x0D
_LF = 0x0A
# A retry longer than this many significant digits is clamped: nobody means a delay beyond
# 31 years, and int() on thousands of digits is slow (and refused by Python past 4300
# digits). Leading zeros are not significant: WHATWG reads "retry:000399" as 399.
_MAX_RETRY_DIGITS = 12
_MAX_RETRY: int = 10**_MAX_RETRY_DIGITS - 1


class SSEProtocolError(ValueError):
    """The server sent something that is not a valid event stream (for us): a line that is
    not UTF-8, a line or an event over the parser's limits."""


class EventParser:
    """Turns the bytes of one ``text/event-stream`` response into events.

    Usage: after each :meth:`feed`, call :meth:`next_event` until it returns ``None``
    (it needs more bytes). Events come out in stream order, and an error is raised only
    when the parser reaches the faulty line, so the events before it are never lost.
    """

    def __init__(
        self,
        *,
        last_event_id: str = "",
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        if max_line_length < 1 or max_event_size < 1:
            raise ValueError("max_line_length and max_event_size must be at least 1")
        self.max_line_length = max_line_length
        self.max_event_size = max_event_size
        #: The last event ID as of the last blank line (``""`` for none): send it as
        #: ``Last-Event-ID`` when reconnecting.
        self.last_event_id = last_event_id
        self._id_buffer = last_event_id
        #: The latest valid ``retry`` value (ms) this stream sent, or ``None``.
        self.retry: int | None = None
        self._buffer = bytearray()
        self._pos = 0  # start of the first unconsumed byte
        self._scan = 0  # where the search for a line end resumes (no line end before it)
        self._skip_lf = False  # the previous line ended with CR: a following LF is its pair
        self._bom_checked = False
        self._data: list[str] = []
        self._data_size = 0
        self._event_name = ""
        self._event_retry: int | None = None
        self._error: SSEProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into complete lines."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server (any chunking)."""
        if self._pos:
            # Compact once per chunk rather than per line: amortised O(n).
            del self._buffer[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buffer += data

    def next_event(self) -> SSEEvent | None:
        """The next complete event, or ``None`` if more bytes are needed.

        Raises :class:`SSEProtocolError` (again and again: it is sticky) once the stream
        turned out to be invalid.
        """
        if self._error is not None:
            raise self._error
        try:
            while True:
                line = self._next_line()
                if line is None:
                    return None
                event = self._process(line)
                if event is not None:
                    return event
        except SSEProtocolError as exc:
            self._error = exc
            raise

    # ------------------------------------------------------------ lines

    def _next_line(self) -> bytes | None:
        buf = self._buffer
        end = len(buf)
        if not self._bom_checked:
            head = bytes(buf[self._pos : self._pos + 3])
            if len(head) < 3 and _BOM.startswith(head):
                return None  # too early to tell whether this is a BOM
            self._bom_checked = True
            if head == _BOM:
                self._pos += 3
                self._scan = max(self._scan, self._pos)
        if self._skip_lf and self._pos < end:
            self._skip_lf = False
            if buf[self._pos] == _LF:
                self._pos += 1
                self._scan = max(self._scan, self._pos)
        match = _LINE_END.search(buf, max(self._scan, self._pos))
        if match is None:
            self._scan = end
            if end - self._pos > self.max_line_length:
                raise SSEProtocolError(
                    f"line longer than {self.max_line_length} bytes without a line end"
                )
            return None
        stop = match.start()
        line = bytes(buf[self._pos : stop])
        if buf[stop] == _CR:
            self._skip_lf = True
        self._pos = self._scan = stop + 1
        if len(line) > self.max_line_length:
            raise SSEProtocolError(f"line of {len(line)} bytes (limit {self.max_line_length})")
        return line

    # ----------------------------------------------------------- fields

    def _process(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SSEProtocolError(
                f"line is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
        if line[0] == ":":
            return None  # a comment (often a keep-alive)
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data_size += len(value) + 1
            if self._data_size > self.max_event_size:
                raise SSEProtocolError(
                    f"event data over {self.max_event_size} characters without a blank line"
                )
            self._data.append(value)
        elif field == "event":
            self._event_name = value
        elif field == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            # isdigit() alone accepts "²" and other Unicode digits; the spec wants ASCII.
            self.retry = self._event_retry = _retry_ms(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data = self._data
        name = self._event_name
        retry = self._event_retry
        self._data = []
        self._data_size = 0
        self._event_name = ""
        self._event_retry = None
        self.last_event_id = self._id_buffer
        if not data:
            return None
        return SSEEvent(
            data="\n".join(data),
            name=name or "message",
            id=self._id_buffer,
            retry=retry,
        )


def _retry_ms(digits: str) -> int:
    """The value of an all-ASCII-digit ``retry`` field, clamped to :data:`_MAX_RETRY`.

    The cap counts significant digits only: zeros in front change nothing in base ten (the
    standard reads the field as a base-ten integer), so ``"0000000000399"`` is 399, not a
    13-digit number clamped to the maximum.
    """
    significant = digits.lstrip("0")
    if len(significant) > _MAX_RETRY_DIGITS:
        return _MAX_RETRY
    return int(significant or "0")
