"""kombu's JSON, as Nameko services write and read it: values JSON has no type for travel
as marker objects, ``{"__type__": "datetime", "__value__": "2024-01-02T03:04:05"}``.

kombu (5.3 and later, what Nameko 2.14 installs) writes ``datetime``, ``date``, ``time``,
``Decimal``, ``UUID`` and ``bytes`` that way and turns the markers back on reading, so a
Nameko handler receiving a ``datetime`` gets a ``datetime``. A trio service that joins a
Nameko system must do the same in both directions, or a migrated service would hand its
handlers ``dict``\\ s where the Nameko one had dates (and a typed payload would not
validate). A marker of a type kombu does not know is left as the ``dict`` it is: a newer
producer's type must not make us reject the message.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from ...codecs import Codec, get_codec

__all__ = ["NAMEKO_JSON", "decode", "encode"]

_plain_default = get_codec("json")  # dataclasses and pydantic models, as everywhere


def _marker(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def _default(value: Any) -> Any:
    # datetime before date: a datetime is a date too.
    if isinstance(value, datetime):
        return _marker("datetime", value.isoformat())
    if isinstance(value, date):
        return _marker("date", value.isoformat())
    if isinstance(value, time):
        return _marker("time", value.isoformat())
    if isinstance(value, Decimal):
        return _marker("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _marker("uuid", {"hex": value.hex})
    if isinstance(value, bytes | bytearray):
        try:
            return _marker("bytes", bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            return _marker("base64", base64.b64encode(value).decode("ascii"))
    # Models and dataclasses: what the plain json codec does with them.
    return json.loads(_plain_default.encode(value))


_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": lambda v: datetime.fromisoformat(v).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(**v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("ascii")),
}


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        decoder = _DECODERS.get(obj["__type__"])
        if decoder is not None:
            return decoder(obj["__value__"])
    return obj


_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"))


def encode(value: Any) -> bytes:
    """``value`` as kombu's JSON (UTF-8)."""
    return _ENCODER.encode(value).encode("utf-8")


def decode(body: bytes) -> Any:
    """kombu's JSON, markers turned back into their types (a bad one: ``ValueError``)."""
    return json.loads(body, object_hook=_object_hook)


#: kombu's JSON: ``application/json`` with ``content_encoding: utf-8``. Nameko writes the
#: encoding, so a route decoding plain ``json`` (no encoding) would refuse every Nameko
#: message; this codec reads both spellings and writes kombu's.
NAMEKO_JSON = Codec(
    "nameko-json",
    content_type="application/json",
    content_encoding="utf-8",
    encode=encode,
    decode=decode,
)
