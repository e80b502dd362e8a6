"""Message codecs: how Python values become message bodies and back.

A codec has a name (what routes and ``call()`` take: ``codec="json"``), the
``content_type`` / ``content_encoding`` it writes in the message properties, and
``encode``/``decode``. Consumers pick the decoder from the message's own
``content_type``/``content_encoding`` when set, so a producer may switch codecs without
redeploying its consumers.

Built in:

* ``json`` (default) — UTF-8 JSON, ``application/json``;
* ``raw`` — bytes as they are, ``application/octet-stream``;
* ``gzip+json`` — gzip-compressed UTF-8 JSON, ``application/json`` with
  ``content_encoding: gzip``;
* ``amqp_worker`` — the wire format of the amqp_worker library (lib-python-amqp-worker):
  gzip-compressed UTF-8 JSON, ``application/octet-stream``, no ``content_encoding``, in
  amqp_worker's :class:`Envelope` — requests ``{"data": X}``, replies
  ``{"success": true, "data": ...}`` / ``{"success": false, "error": {...}}``
  (:func:`amqp_worker_codec` for one that also sends tracebacks).

Register your own with :func:`register_codec`.

Decoding is bounded. Every codec refuses to hand its deserializer more than ``max_size``
bytes (:data:`DEFAULT_MAX_DECODED_SIZE`, 16 MiB, unless the codec says otherwise:
``get_codec("json").limited(64 * 2**20)``), *after* decompression: ``gzip+json`` inflates
incrementally (``zlib.decompressobj().decompress(data, max_length)``) and stops at the
limit, so a decompression bomb costs at most ``max_size`` bytes, never more
(:class:`BodyTooLargeError`). Which codecs a consumer accepts is its own choice
(:func:`resolve_decoder`): a message is never gunzipped because it asks to be.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from ._envelope import AmqpWorkerEnvelope, Envelope

__all__ = [
    "DEFAULT_MAX_DECODED_SIZE",
    "AmqpWorkerEnvelope",
    "BodyTooLargeError",
    "Codec",
    "CodecError",
    "Envelope",
    "amqp_worker_codec",
    "codec_for",
    "get_codec",
    "register_codec",
    "resolve_decoder",
]

#: The default limit of a decoded body (after decompression), in bytes: 16 MiB.
DEFAULT_MAX_DECODED_SIZE = 16 * 1024 * 1024


class CodecError(ValueError):
    """A body could not be encoded or decoded with the codec asked for."""


class BodyTooLargeError(CodecError):
    """A body is (or inflates to) more than the codec's ``max_size`` bytes."""

    def __init__(self, codec: str, max_size: int, *, inflated: bool) -> None:
        what = "inflates past" if inflated else "is larger than"
        super().__init__(
            f"{codec} body {what} the limit of {max_size} bytes (the codec's max_size; "
            "raise it with get_codec(name).limited(n))"
        )
        self.codec = codec
        self.max_size = max_size


class Codec:
    """A named pair of ``encode``/``decode`` functions and the properties they imply."""

    __slots__ = (
        "_decode",
        "_decompress",
        "_encode",
        "content_encoding",
        "content_type",
        "envelope",
        "max_size",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        content_type: str,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        content_encoding: str | None = None,
        decompress: Callable[[bytes, int], bytes] | None = None,
        max_size: int = DEFAULT_MAX_DECODED_SIZE,
        envelope: Envelope | None = None,
    ) -> None:
        """``decompress(body, max_size)`` (optional) undoes ``content_encoding`` before
        ``decode`` and must raise :class:`BodyTooLargeError` rather than produce more
        than ``max_size`` bytes (:func:`gunzip` does); ``decode`` then gets the plain
        bytes. ``max_size`` bounds what ``decode`` is given. ``envelope`` (optional) is
        the shape a peer wraps values in: :meth:`encode` wraps, :meth:`decode` opens, and
        RPC replies use :meth:`encode_result` / :meth:`encode_error`. A codec with an
        envelope is used only where it is named: a content type alone never selects it."""
        if max_size < 1:
            raise ValueError("max_size must be at least 1 byte")
        self.name = name
        self.content_type = content_type
        self.content_encoding = content_encoding
        self._encode = encode
        self._decode = decode
        self._decompress = decompress
        self.max_size = max_size
        self.envelope = envelope

    def limited(self, max_size: int) -> Codec:
        """This codec with another decoded-size limit (same name and properties)."""
        return Codec(
            self.name,
            content_type=self.content_type,
            encode=self._encode,
            decode=self._decode,
            content_encoding=self.content_encoding,
            decompress=self._decompress,
            max_size=max_size,
            envelope=self.envelope,
        )

    @property
    def decompresses(self) -> bool:
        """Whether decoding inflates the body first (so it may cost far more than it)."""
        return self._decompress is not None

    def __repr__(self) -> str:
        encoding = f" ({self.content_encoding})" if self.content_encoding else ""
        return f"<Codec {self.name!r} {self.content_type}{encoding}>"

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` (in the envelope's request, if any); :class:`CodecError` if it
        cannot be."""
        if self.envelope is not None:
            return self._encode_bare(self.envelope.wrap_request(value), value)
        return self._encode_bare(value, value)

    def encode_result(self, value: Any) -> bytes:
        """Encode an RPC handler's result (in the envelope's result reply, if any)."""
        if self.envelope is not None:
            return self._encode_bare(self.envelope.wrap_result(value), value)
        return self._encode_bare(value, value)

    def encode_error(self, exc: BaseException) -> bytes:
        """Encode the error reply for ``exc`` (the envelope's, else
        ``{"error": {"type", "message"}}``)."""
        envelope = self.envelope or _BARE
        return self._encode_bare(envelope.wrap_error(exc), exc)

    def _encode_bare(self, value: Any, original: Any) -> bytes:
        try:
            return self._encode(value)
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(
                f"cannot encode {type(original).__name__} with {self.name}: {exc}"
            ) from exc

    def decode(self, body: bytes) -> Any:
        """Decode ``body`` (and open the envelope's request, if any); :class:`CodecError`
        if it is not valid for this codec, :class:`BodyTooLargeError` if it is (or
        inflates to) more than ``max_size``."""
        value = self._decode_bare(body)
        if self.envelope is None:
            return value
        try:
            return self.envelope.open_request(value)
        except Exception as exc:
            raise CodecError(f"body is not valid {self.name}: {exc}") from exc

    def decode_reply(self, body: bytes) -> tuple[bool, Any]:
        """An RPC reply: ``(True, result)``, or ``(False, error)`` when the envelope says
        the handler failed (``error``: a dict with at least ``type`` and ``message``).
        Without an envelope, always ``(True, value)``: trioworker's own error replies are
        told apart by a header, not by the body."""
        value = self._decode_bare(body)
        if self.envelope is None:
            return True, value
        try:
            return self.envelope.open_reply(value)
        except Exception as exc:
            raise CodecError(f"reply is not valid {self.name}: {exc}") from exc

    def _decode_bare(self, body: bytes) -> Any:
        limit = self.max_size
        if self._decompress is not None:
            try:
                body = self._decompress(body, limit)
            except BodyTooLargeError:
                raise BodyTooLargeError(self.name, limit, inflated=True) from None
            except CodecError as exc:
                raise CodecError(f"body is not valid {self.name}: {exc}") from exc
            except Exception as exc:
                raise CodecError(f"body is not valid {self.name}: {exc}") from exc
            if len(body) > limit:  # a user decompressor that ignored the limit
                raise BodyTooLargeError(self.name, limit, inflated=True)
        elif len(body) > limit:
            raise BodyTooLargeError(self.name, limit, inflated=False)
        try:
            return self._decode(body)
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"body is not valid {self.name}: {exc}") from exc


def _json_default(value: Any) -> Any:
    # dataclasses and pydantic models are the typed bodies handlers return most often.
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_JSON_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))


def _json_encode(value: Any) -> bytes:
    return _JSON_ENCODER.encode(value).encode("utf-8")


def _json_decode(body: bytes) -> Any:
    return json.loads(body)


def _raw_encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError("the raw codec takes bytes or str")


def _gzip_json_encode(value: Any) -> bytes:
    # mtime=0: the same value always gives the same bytes.
    return gzip.compress(_json_encode(value), mtime=0)


def gunzip(body: bytes, max_size: int) -> bytes:
    """Inflate gzip ``body`` (every member), producing at most ``max_size`` bytes.

    Incremental: each ``decompress`` call is told how much it may produce, so the output
    never grows past ``max_size + 1`` bytes whatever the ratio; one byte more than the
    limit raises :class:`BodyTooLargeError`.
    """
    out: list[bytes] = []
    total = 0
    data = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(data, max_size - total + 1)
        except zlib.error as exc:
            raise CodecError(f"not gzip: {exc}") from None
        total += len(chunk)
        if total > max_size:
            raise BodyTooLargeError("gzip", max_size, inflated=True)
        out.append(chunk)
        if not inflater.eof:
            raise CodecError("truncated gzip stream")
        data = inflater.unused_data
        if not data.strip(b"\0"):  # gzip.decompress also ignores zero padding
            return out[0] if len(out) == 1 else b"".join(out)


JSON = Codec("json", content_type="application/json", encode=_json_encode, decode=_json_decode)
RAW = Codec("raw", content_type="application/octet-stream", encode=_raw_encode, decode=bytes)
GZIP_JSON = Codec(
    "gzip+json",
    content_type="application/json",
    content_encoding="gzip",
    encode=_gzip_json_encode,
    decode=_json_decode,
    decompress=gunzip,
)


def amqp_worker_codec(*, trace: bool = False, max_size: int = DEFAULT_MAX_DECODED_SIZE) -> Codec:
    """amqp_worker's wire format (the registered ``"amqp_worker"`` is the default one).
    ``trace=True`` adds the traceback to error replies (``error["trace"]``) as amqp_worker
    does; off by default, so a service's file paths and code lines stay in its own log."""
    return Codec(
        "amqp_worker",
        content_type="application/octet-stream",
        encode=_gzip_json_encode,
        decode=_json_decode,
        decompress=gunzip,
        max_size=max_size,
        envelope=AmqpWorkerEnvelope(trace=trace),
    )


AMQP_WORKER = amqp_worker_codec()
#: The error replies of codecs without an envelope (trioworker's own format).
_BARE = Envelope()

_BY_NAME: dict[str, Codec] = {c.name: c for c in (JSON, RAW, GZIP_JSON, AMQP_WORKER)}


def register_codec(codec: Codec, *, replace: bool = False) -> Codec:
    """Make ``codec`` available by name (and by its content type/encoding to consumers)."""
    if codec.name in _BY_NAME and not replace:
        raise ValueError(f"a codec named {codec.name!r} is already registered")
    _BY_NAME[codec.name] = codec
    return codec


def get_codec(codec: str | Codec) -> Codec:
    """The codec named ``codec`` (or ``codec`` itself); ``KeyError`` names the known ones."""
    if isinstance(codec, Codec):
        return codec
    try:
        return _BY_NAME[codec]
    except KeyError:
        raise KeyError(
            f"unknown codec {codec!r}; known: {', '.join(sorted(_BY_NAME))} "
            "(register_codec adds one)"
        ) from None


def codec_for(
    content_type: str | None, content_encoding: str | None, default: str | Codec = JSON
) -> Codec:
    """The codec that reads a message with these properties.

    The message's own ``content_type``/``content_encoding`` win when a registered codec
    matches them exactly (the most recently registered first); otherwise ``default``.
    """
    fallback = get_codec(default)
    if not content_type and not content_encoding:
        return fallback
    if fallback.content_type == content_type and fallback.content_encoding == (
        content_encoding or None
    ):
        return fallback
    for codec in reversed(list(_BY_NAME.values())):
        # An envelope is a protocol's, not a content type's: amqp_worker's
        # application/octet-stream is also what raw bodies say.
        if codec.envelope is None and _matches(codec, content_type, content_encoding):
            return codec
    return fallback


def _matches(codec: Codec, content_type: str | None, content_encoding: str | None) -> bool:
    return codec.content_type == content_type and codec.content_encoding == (
        content_encoding or None
    )


def resolve_decoder(
    content_type: str | None,
    content_encoding: str | None,
    default: Codec,
    accept: Iterable[Codec] = (),
) -> Codec:
    """The codec a consumer that decodes with ``default`` and also accepts ``accept``
    codecs uses for a message with these properties.

    The message's properties only *choose among* what the consumer accepts: a message that
    names an accepted codec is decoded with it; one that names none, or only a content
    type the consumer does not know, is decoded with ``default``; one whose
    ``content_encoding`` (a compression) the consumer does not accept raises
    :class:`CodecError` — it is not inflated because it asks to be.
    """
    if not content_type and not content_encoding:
        return default
    if _matches(default, content_type, content_encoding):
        return default
    for codec in accept:
        if _matches(codec, content_type, content_encoding):
            return codec
    if (content_encoding or None) != default.content_encoding:
        names = ", ".join(sorted({default.name, *(c.name for c in accept)}))
        raise CodecError(
            f"content_encoding {content_encoding!r} (content_type {content_type!r}) is not "
            f"accepted here (accepted: {names}; a route takes more with accept=)"
        )
    return default
