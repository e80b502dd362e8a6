"""A stream delivery's offset, read straight from its raw properties.

Every delivery from a RabbitMQ stream carries its offset in the ``x-stream-offset`` header.
A route reading a stream needs it for every message (its position), while a handler may
never look at any other property; decoding the whole property list with its header table
(pamqp, in Python) cost about 12 µs a message, more than the rest of the route's work. This
walks the raw bytes to that one header instead: the property flags, the two short strings
before the table, then the table's entries — skipping each value by its type's size,
without building it.

It only reads: what it cannot walk (a property-flags continuation word, a field type it
does not know, a length past the end) returns :data:`UNKNOWN`, and the caller decodes the
properties the usual way, which raises a clear error for malformed ones.
"""

from __future__ import annotations

from typing import Final

__all__ = ["OFFSET_KEY", "UNKNOWN", "stream_offset_of"]

OFFSET_KEY: Final = b"x-stream-offset"
#: Returned when the bytes cannot be walked here: decode the properties instead.
UNKNOWN: Final = -1

_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS = 0x8000, 0x4000, 0x2000
#: Sizes of the fixed-size field values (RabbitMQ's table types, as pamqp decodes them).
_FIXED = {
    ord("t"): 1, ord("b"): 1, ord("B"): 1, ord("s"): 2, ord("u"): 2, ord("I"): 4,
    ord("i"): 4, ord("l"): 8, ord("L"): 8, ord("f"): 4, ord("d"): 8, ord("D"): 5,
    ord("T"): 8, ord("V"): 0,
}  # fmt: skip
#: The integer field types: (width, signed).
_INTEGERS = {
    ord("b"): (1, True), ord("B"): (1, False), ord("s"): (2, True), ord("u"): (2, False),
    ord("I"): (4, True), ord("i"): (4, False), ord("l"): (8, True), ord("L"): (8, True),
}  # fmt: skip
#: Field types whose value is a 4-byte length and that many bytes.
_SIZED = frozenset(map(ord, "SAFx"))


def stream_offset_of(raw: bytes) -> int | None:
    """The ``x-stream-offset`` header of a raw property list (flags + values): the offset,
    ``None`` if there is no such header (not a stream delivery), or :data:`UNKNOWN`."""
    size = len(raw)
    if size < 2:
        return UNKNOWN
    flags = (raw[0] << 8) | raw[1]
    if flags & 1:
        return UNKNOWN  # a continuation word: no such property list comes from RabbitMQ
    if not flags & _HEADERS:
        return None
    at = 2
    for bit in (_CONTENT_TYPE, _CONTENT_ENCODING):
        if flags & bit:
            if at >= size:
                return UNKNOWN
            at += 1 + raw[at]
    if at + 4 > size:
        return UNKNOWN
    end = at + 4 + int.from_bytes(raw[at : at + 4], "big")
    at += 4
    if end > size:
        return UNKNOWN
    while at < end:
        length = raw[at]
        key_end = at + 1 + length
        if key_end >= end:
            return UNKNOWN
        kind = raw[key_end]
        at = key_end + 1
        integer = _INTEGERS.get(kind)
        if integer is not None and raw[key_end - length : key_end] == OFFSET_KEY:
            width, signed = integer  # RabbitMQ sends 'l'; pamqp picks the smallest that fits
            if at + width > end:
                return UNKNOWN
            return int.from_bytes(raw[at : at + width], "big", signed=signed)
        fixed = _FIXED.get(kind)
        if fixed is not None:
            at += fixed
        elif kind in _SIZED:
            if at + 4 > end:
                return UNKNOWN
            at += 4 + int.from_bytes(raw[at : at + 4], "big")
        else:
            return UNKNOWN
    return None if at == end else UNKNOWN
