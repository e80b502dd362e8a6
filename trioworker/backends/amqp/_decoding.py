"""How a route decodes message bodies: its codec, the other codecs it accepts, and where
the work runs.

A route decodes with its ``codec``; a message whose ``content_type``/``content_encoding``
name another codec is decoded with that one only if the route lists it in ``accept=``
(``accept=("gzip+json",)``). A message asking for a compression the route does not accept
fails alone (rejected, not requeued) instead of being inflated. Every codec bounds the
decoded size (:data:`trioworker.codecs.DEFAULT_MAX_DECODED_SIZE`), and bodies that may
cost real CPU — compressed ones over :data:`OFFLOAD_COMPRESSED_SIZE`, any over
:data:`OFFLOAD_SIZE` — are decoded in a worker thread, so the event loop never stalls on
one message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import trio

from ...amqp import BasicProperties
from ...codecs import Codec, get_codec, resolve_decoder

__all__ = ["DEFAULT_DECODING", "OFFLOAD_COMPRESSED_SIZE", "OFFLOAD_SIZE", "Decoding"]

#: Bodies larger than this (bytes) decode in a worker thread.
OFFLOAD_SIZE = 256 * 1024
#: Compressed bodies larger than this decode in a worker thread (they may inflate to the
#: codec's limit, 16 MiB by default).
OFFLOAD_COMPRESSED_SIZE = 4 * 1024


class Message(Protocol):
    """What decoding needs of a message (a :class:`~._message.Message`, which imports
    this module)."""

    @property
    def body(self) -> bytes: ...

    @property
    def properties(self) -> BasicProperties: ...


class Decoding:
    """A route's decoders: ``codec`` first, then those in ``accept``."""

    __slots__ = ("accept", "codec")

    def __init__(self, codec: str | Codec = "json", accept: Iterable[str | Codec] = ()) -> None:
        self.codec = get_codec(codec)
        # Unknown names fail at registration; the route's own codec need not be repeated.
        self.accept = tuple(c for c in map(get_codec, accept) if c is not self.codec)

    @property
    def is_default(self) -> bool:
        """JSON only, as :meth:`Message.json` decodes without being told."""
        return self.codec is DEFAULT_DECODING.codec and not self.accept

    def decoder(self, message: Message) -> Codec:
        """The codec for ``message`` (``CodecError`` if it asks for one not accepted)."""
        props = message.properties
        return resolve_decoder(props.content_type, props.content_encoding, self.codec, self.accept)

    def decode(self, message: Message) -> Any:
        """Decode ``message``'s body here and now (bounded by the codec's ``max_size``)."""
        return self.decoder(message).decode(message.body)

    def needs_thread(self, message: Message, codec: Codec) -> bool:
        """Whether decoding ``message`` with ``codec`` should leave the event loop."""
        size = len(message.body)
        return size > OFFLOAD_SIZE or (codec.decompresses and size > OFFLOAD_COMPRESSED_SIZE)

    async def decode_async(self, message: Message) -> Any:
        """:meth:`decode`, in a worker thread when the body is large or compressed."""
        codec = self.decoder(message)
        if self.needs_thread(message, codec):
            return await trio.to_thread.run_sync(codec.decode, message.body)
        return codec.decode(message.body)


#: What a message decodes with when its route said nothing: JSON only.
DEFAULT_DECODING = Decoding()
