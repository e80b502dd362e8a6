"""Responses: what a handler may return, and how each becomes status, headers and bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Body", "Response", "to_response"]

Body = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any] | None

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"

# RFC 9110 §5.1 token characters for names; values must not smuggle a CR/LF or NUL, which
# would split the response (header injection) — checked here so the handler's own
# traceback names the culprit, not a protocol error deep inside the server.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
# Computed from the body; a handler's own value could only disagree with it.
_COMPUTED = frozenset({"content-length", "transfer-encoding"})


def _latin1(value: str) -> bool:
    """Header bytes are Latin-1 on the wire; anything else has to be encoded by the caller."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _encode(body: Body) -> tuple[bytes, str | None]:
    """Bytes and default content type for a body, by the same rules as a handler's result."""
    if body is None:
        return b"", None
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), OCTETS
    if isinstance(body, str):
        return body.encode("utf-8"), TEXT
    if isinstance(body, dict | list):
        return _json_bytes(body), JSON
    raise TypeError(
        f"cannot send a {type(body).__name__} as a response body; "
        "use dict, list, str, bytes, None or trioworker.Response"
    )


class Response:
    """An explicit response: ``Response(body, status=201, headers={...}, content_type=...)``.

    ``body`` follows the rules of a handler's return value — dict/list as JSON, str as
    UTF-8 text, bytes as ``application/octet-stream``, None as no body — and
    ``content_type`` overrides the type those rules pick. ``Content-Length`` is computed.
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: Body = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an int from 100 to 599, got {status!r}")
        self.status = status
        self.body, default_type = _encode(body)
        self.content_type = content_type if content_type is not None else default_type
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self.headers: list[tuple[str, str]] = []
        for name, value in pairs:
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if not isinstance(value, str) or _BAD_VALUE.search(value) or not _latin1(value):
                raise ValueError(f"invalid value for header {name!r}: {value!r}")
            if name.lower() == "content-type" and content_type is None:
                self.content_type = value
                continue
            if name.lower() not in _COMPUTED:
                self.headers.append((name, value))
        ctype = self.content_type
        if ctype is not None and (_BAD_VALUE.search(ctype) or not _latin1(ctype)):
            raise ValueError(f"invalid content type {self.content_type!r}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.content_type} {len(self.body)} bytes>"

    @property
    def has_body(self) -> bool:
        """False for the statuses that must not carry one (1xx, 204, 304: RFC 9110 §6.4.1)."""
        return not (self.status < 200 or self.status in (204, 304))

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers as ASGI wants them. A HEAD answer sends these too (same length as GET)."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        if self.has_body:
            if self.content_type is not None:
                raw.append((b"content-type", self.content_type.encode("latin-1")))
            raw.append((b"content-length", str(len(self.body)).encode("ascii")))
        return raw


def to_response(result: Any) -> Response:
    """Turn a handler's return value into a :class:`Response` (None → 204 No Content)."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status=204)
    return Response(result)
