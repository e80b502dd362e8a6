"""The request a handler receives: method, path, query, headers, path parameters, body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ._errors import BadRequest, PayloadTooLarge
from ._json import parse_json

__all__ = ["ClientDisconnect", "Headers", "QueryParams", "Request"]

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientDisconnect(Exception):
    """The client went away while its body was being read; there is no one to answer."""


class _MultiMapping(Mapping[str, str]):
    """A read-only mapping that keeps every value of repeated keys.

    ``m[key]`` is the *first* value (what a form or a proxy meant most of the time), and
    ``m.getlist(key)`` is all of them in order, so nothing sent is lost.
    """

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items = [(self._key(k), v) for k, v in items]
        self._first: dict[str, str] = {}
        for key, value in self._items:
            self._first.setdefault(key, value)

    @staticmethod
    def _key(key: str) -> str:
        return key

    def __getitem__(self, key: str) -> str:
        return self._first[self._key(key)]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._key(key) in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getlist(self, key: str) -> list[str]:
        """Every value of ``key``, in the order sent (empty if absent)."""
        key = self._key(key)
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (key, value) pair, repeats included, in the order sent."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class QueryParams(_MultiMapping):
    """The query string: ``request.query["page"]`` (first value), ``.getlist("tag")``.

    Percent-escapes are decoded as UTF-8; blank values (``?flag=``) are kept as ``""``.
    """

    @classmethod
    def from_bytes(cls, raw: bytes) -> QueryParams:
        return cls(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


class Headers(_MultiMapping):
    """Request headers, case-insensitive: ``request.headers["content-type"]``."""

    @staticmethod
    def _key(key: str) -> str:
        return key.lower()

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        # Latin-1 is what HTTP/1.1 field values are, byte for byte (RFC 9110 §5.5).
        return cls((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)


class Request:
    """What a route handler gets.

    Attributes: ``method`` (upper case), ``path`` (percent-decoded), ``query``
    (:class:`QueryParams`), ``headers`` (:class:`Headers`), ``path_params`` (converted by
    the template: ``{id:int}`` gives an ``int``), ``route`` (the template that matched, e.g.
    ``/items/{id}``), ``client`` (``(host, port)`` or None), ``app`` (the :class:`App`, for
    shared state: ``request.app["db"]``).

    The body is read on demand and at most once (later calls return the cached bytes), so a
    handler that never looks at it costs nothing, and a body larger than
    ``app.http.max_body_size`` is refused with 413 before it fills memory.
    """

    def __init__(
        self,
        scope: Mapping[str, Any],
        receive: Receive,
        *,
        app: Any,
        path_params: dict[str, Any] | None = None,
        route: str | None = None,
        max_body_size: int | None = None,
    ) -> None:
        self.scope = scope
        self.app = app
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = QueryParams.from_bytes(scope.get("query_string", b""))
        self.headers = Headers.from_raw(scope.get("headers", ()))
        self.path_params: dict[str, Any] = path_params or {}
        self.route = route
        client = scope.get("client")
        self.client: tuple[str, int] | None = (client[0], client[1]) if client else None
        self._receive = receive
        self._max_body_size = max_body_size
        self._body: bytes | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"

    async def body(self) -> bytes:
        """The whole body. Raises :class:`PayloadTooLarge` (→ 413) past the size limit."""
        if self._body is not None:
            return self._body
        limit = self._max_body_size
        declared = self.headers.get("content-length")
        if (
            limit is not None
            and declared is not None
            and declared.isdigit()
            and int(declared) > limit
        ):
            raise PayloadTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = b"".join(chunks)
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8; invalid UTF-8 raises :class:`BadRequest` (→ 400)."""
        raw = await self.body()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None

    async def json(self) -> Any:
        """The body parsed as JSON (UTF-8, a leading BOM ignored, no NaN or Infinity).

        Whatever the body holds, a malformed one raises :class:`BadRequest` (→ 400) with a
        short reason, never another exception (→ 500): see :mod:`._json` for the limits.
        """
        return parse_json(await self.body())
