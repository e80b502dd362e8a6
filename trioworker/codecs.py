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
  ``content_encoding: gzip``: the wire format of the amqp_worker library
  (lib-python-amqp-worker), so trioworker and amqp_worker services can talk.

Register your own with :func:`register_codec`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "Codec",
    "CodecError",
    "codec_for",
    "get_codec",
    "register_codec",
]


class CodecError(ValueError):
    """A body could not be encoded or decoded with the codec asked for."""


class Codec:
    """A named pair of ``encode``/``decode`` functions and the properties they imply."""

    __slots__ = ("_decode", "_encode", "content_encoding", "content_type", "name")

    def __init__(
        self,
        name: str,
        *,
        content_type: str,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        content_encoding: str | None = None,
    ) -> None:
        self.name = name
        self.content_type = content_type
        self.content_encoding = content_encoding
        self._encode = encode
        self._decode = decode

    def __repr__(self) -> str:
        encoding = f" ({self.content_encoding})" if self.content_encoding else ""
        return f"<Codec {self.name!r} {self.content_type}{encoding}>"

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; :class:`CodecError` if it cannot be."""
        try:
            return self._encode(value)
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(
                f"cannot encode {type(value).__name__} with {self.name}: {exc}"
            ) from exc

    def decode(self, body: bytes) -> Any:
        """Decode ``body``; :class:`CodecError` if it is not valid for this codec."""
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


def _gzip_json_decode(body: bytes) -> Any:
    return json.loads(gzip.decompress(body))


JSON = Codec("json", content_type="application/json", encode=_json_encode, decode=_json_decode)
RAW = Codec("raw", content_type="application/octet-stream", encode=_raw_encode, decode=bytes)
GZIP_JSON = Codec(
    "gzip+json",
    content_type="application/json",
    content_encoding="gzip",
    encode=_gzip_json_encode,
    decode=_gzip_json_decode,
)

_BY_NAME: dict[str, Codec] = {c.name: c for c in (JSON, RAW, GZIP_JSON)}


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
        if codec.content_type == content_type and codec.content_encoding == (
            content_encoding or None
        ):
            return codec
    return fallback
