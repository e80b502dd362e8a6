"""What request paths reach handlers: decoded, not normalised; a NUL is refused.

Requests go over raw sockets because HTTP clients (httpx included) normalise ``..`` and
re-encode paths before sending, which would hide what the server receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trioworker import App, HTTPError, Request, open_app

from .conftest import MUST_HAPPEN

MakeApp = Callable[..., App]


async def raw_get(app: App, target: bytes) -> tuple[int, bytes]:
    """GET ``target`` exactly as given; the status and the body of the answer."""
    with trio.fail_after(MUST_HAPPEN):
        stream = await trio.open_tcp_stream("127.0.0.1", app.http.port)
        async with stream:
            await stream.send_all(
                b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def files_app(make_app: MakeApp, calls: list[dict[str, Any]]) -> App:
    app = make_app()

    @app.http.get("/files/{name:path}")
    async def file(request: Request) -> dict[str, Any]:
        calls.append(request.path_params)
        return {"path": request.path, "name": request.path_params["name"]}

    @app.http.get("/users/{user}")
    async def user(request: Request) -> dict[str, Any]:
        calls.append(request.path_params)
        return {"user": request.path_params["user"]}

    return app


@pytest.mark.parametrize(
    "target",
    [b"/files/a%00b", b"/files/%00", b"/users/x%00.txt", b"/health%00", b"/nowhere/%00"],
)
async def test_a_nul_in_the_path_is_refused_before_routing(
    make_app: MakeApp, target: bytes
) -> None:
    calls: list[dict[str, Any]] = []
    app = files_app(make_app, calls)
    async with open_app(app):
        status, body = await raw_get(app, target)
        ok, _ = await raw_get(app, b"/files/a")
    assert status == 400
    assert json.loads(body) == {"error": "the request path contains a NUL character (%00)"}
    assert ok == 200
    assert calls == [{"name": "a"}]  # the handler never saw the NUL


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (b"/files/%2e%2e/%2e%2e/etc/passwd", "../../etc/passwd"),
        (b"/files/../../etc/passwd", "../../etc/passwd"),
        (b"/files/a/%2E%2E%2F..%2fsecret", "a/../../secret"),  # %2F is a slash too
        (b"/files//etc/passwd", "/etc/passwd"),
    ],
)
async def test_path_parameters_arrive_decoded_and_not_normalised(
    make_app: MakeApp, target: bytes, name: str
) -> None:
    """As docs/http.md says: the handler gets the dots; resolving them is its job."""
    calls: list[dict[str, Any]] = []
    app = files_app(make_app, calls)
    async with open_app(app):
        status, body = await raw_get(app, target)
    assert status == 200
    assert json.loads(body) == {"name": name, "path": "/files/" + name}
    assert calls == [{"name": name}]


async def test_the_documented_safe_pattern_refuses_escapes(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """The pattern of docs/http.md: resolve against the base, check it stays inside."""
    base = (tmp_path / "public").resolve()
    base.mkdir()
    (base / "a.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("no")
    app = make_app()

    @app.http.get("/static/{name:path}")
    def static(request: Request) -> bytes:
        target = (base / request.path_params["name"]).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise HTTPError(404, "not found")
        return target.read_bytes()

    async with open_app(app):
        escaped, _ = await raw_get(app, b"/static/%2e%2e/secret.txt")
        absolute, _ = await raw_get(app, b"/static/" + str(tmp_path).encode() + b"/secret.txt")
        found, content = await raw_get(app, b"/static/a.txt")
    assert escaped == 404
    assert absolute == 404
    assert (found, content) == (200, b"hello")
