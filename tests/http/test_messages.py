"""Unit tests of Response encoding and the request's multi-mappings (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from trioworker import Request, Response
from trioworker.http import Headers, QueryParams
from trioworker.http._response import to_response


@pytest.mark.parametrize(
    ("result", "status", "content_type", "body"),
    [
        ({"a": "é"}, 200, "application/json", '{"a":"é"}'.encode()),
        ([1, 2], 200, "application/json", b"[1,2]"),
        ("héllo", 200, "text/plain; charset=utf-8", "héllo".encode()),
        (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
        (bytearray(b"ab"), 200, "application/octet-stream", b"ab"),
        (None, 204, None, b""),
    ],
)
def test_return_values_become_responses(
    result: Any, status: int, content_type: str | None, body: bytes
) -> None:
    response = to_response(result)
    assert (response.status, response.content_type, response.body) == (status, content_type, body)


def test_unsupported_return_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot send a int"):
        to_response(42)


def test_explicit_response_keeps_its_settings() -> None:
    response = Response(
        {"id": 1}, status=201, headers={"Location": "/items/1"}, content_type="application/x+json"
    )
    assert to_response(response) is response
    raw = dict(response.raw_headers())
    assert raw[b"location"] == b"/items/1"
    assert raw[b"content-type"] == b"application/x+json"
    assert raw[b"content-length"] == b"8"


def test_content_length_is_computed_and_a_content_type_header_is_honoured() -> None:
    response = Response(b"abc", headers=[("Content-Length", "99"), ("Content-Type", "image/png")])
    raw = response.raw_headers()
    assert (b"content-length", b"3") in raw and (b"content-length", b"99") not in raw
    assert (b"content-type", b"image/png") in raw


def test_no_body_headers_for_204() -> None:
    assert Response(status=204).raw_headers() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": 99}, "status must be"),
        ({"status": True}, "status must be"),
        ({"headers": {"X-A": "1\r\nSet-Cookie: x=1"}}, "invalid value"),
        ({"headers": {"Bad Name": "1"}}, "invalid header name"),
        ({"headers": {"X-A": "snowman ☃"}}, "invalid value"),
        ({"content_type": "text/html\r\nX: y"}, "invalid content type"),
    ],
)
def test_bad_response_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Response("x", **kwargs)


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = Headers.from_raw([(b"X-Tag", b"a"), (b"x-tag", b"b"), (b"Content-Type", b"t/x")])
    assert headers["x-tag"] == "a" and headers["X-TAG"] == "a"
    assert headers.getlist("X-Tag") == ["a", "b"]
    assert "CONTENT-TYPE" in headers and len(headers) == 2
    assert headers.get("missing") is None


def test_query_params_keep_repeats_blank_values_and_decode_utf8() -> None:
    query = QueryParams.from_bytes(b"tag=a&tag=b&empty=&name=%C3%A9t%C3%A9&plus=a+b")
    assert query["tag"] == "a" and query.getlist("tag") == ["a", "b"]
    assert query["empty"] == ""
    assert query["name"] == "été" and query["plus"] == "a b"
    assert query.multi_items()[:2] == [("tag", "a"), ("tag", "b")]


async def test_request_body_is_read_once_from_chunks() -> None:
    events = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    request = Request(scope, receive, app=None)  # type: ignore[arg-type]
    assert await request.json() == {"a": 1}
    assert await request.body() == b'{"a": 1}'  # cached: receive is not called again
