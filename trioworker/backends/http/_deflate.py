"""permessage-deflate with a bound on what one message may inflate to.

hypercorn accepts permessage-deflate (RFC 7692) whenever a client offers it — browsers
always do — and wsproto inflates each read's worth of compressed payload with no limit,
checking the message size only afterwards. A hostile client can send a few KiB that
inflate to hundreds of MiB (measured: a 64 MiB bomb cost ~190 MB in one connection, even
with a 1 MiB message limit), so the size limit does not bound memory on its own.

This extension inflates at most ``limit + 1`` bytes per message (zlib's ``max_length``)
and hands on no more: hypercorn's own size check then closes the connection with 1009
(message too big), as for an uncompressed message over the limit. A bomb costs its own
compressed bytes plus the limit, and fails that connection only. The limit is the
server's ``websocket_max_message_size``, read from a context variable that
:func:`inflating_at_most` sets around each connection — hypercorn builds the extension
inside the connection's task, which inherits it.

hypercorn names the class it instantiates as a module global of its ``ws_stream`` module;
:func:`install` points that name at this class (once, idempotent). The subclass only
changes how much is inflated at a time, so behaviour for honest clients is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import Iterator
from typing import Any

from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

__all__ = ["BoundedPerMessageDeflate", "inflating_at_most", "install"]

#: Until a server sets one: hypercorn's own default message limit (16 MiB).
_limit: contextvars.ContextVar[int] = contextvars.ContextVar(
    "trioworker_ws_inflate_limit", default=16 * 1024 * 1024
)


class BoundedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, inflating no message past the connection's limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_inflated = _limit.get()
        self._inflated = 0  # of the message being received
        self._overflowed = False  # that message went past the limit: inflate no more of it

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        if self._overflowed:
            return b""
        decompressor = self._decompressor
        assert decompressor is not None  # set by frame_inbound_header for compressed frames
        room = self._max_inflated - self._inflated
        try:
            out = decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._max_inflated or decompressor.unconsumed_tail:
            # Past the limit (output cut at room + 1 leaves input unconsumed): hand on what
            # was inflated — one byte over the limit — so that hypercorn's size check closes
            # the connection with 1009, as for an uncompressed message; drop the rest.
            self._overflowed = True
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if self._overflowed:
            if fin:  # the stream is cut mid-message: start the next one afresh
                self._overflowed = False
                self._inflated = 0
                self._inbound_compressed = None
                self._decompressor = None
            return None
        result = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return result


@contextlib.contextmanager
def inflating_at_most(limit: int) -> Iterator[None]:
    """Bound inflation of every message received in this context to ``limit`` bytes."""
    token = _limit.set(limit)
    try:
        yield
    finally:
        _limit.reset(token)


def install() -> None:
    """Make hypercorn negotiate :class:`BoundedPerMessageDeflate` instead of wsproto's."""
    setattr(ws_stream, "PerMessageDeflate", BoundedPerMessageDeflate)  # noqa: B010 - a module global
