"""Hostile JSON bodies over the wire: 400 with a short reason, no traceback in the log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from trioworker import App, Request

from .conftest import serving

MakeApp = Callable[..., App]


async def test_hostile_json_bodies_answer_400_without_a_logged_traceback(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    reached: list[Any] = []

    @app.http.post("/orders")
    async def create(request: Request) -> dict[str, bool]:
        reached.append(await request.json())
        return {"ok": True}

    caplog.set_level(logging.DEBUG, logger="trioworker")
    bodies = {
        "deep": b"[" * 100_000,
        "huge int": b'{"qty": ' + b"9" * 5000 + b"}",
        "nan": b'{"price": NaN}',
        "utf-16": '{"a": 1}'.encode("utf-16"),
    }
    async with serving(app) as client:
        answers = {name: await client.post("/orders", content=b) for name, b in bodies.items()}
        bom = await client.post("/orders", content=b'\xef\xbb\xbf{"a": 1}')
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"].startswith("malformed JSON body: "), name
    assert "nested too deeply" in answers["deep"].json()["error"]
    assert "digits" in answers["huge int"].json()["error"]
    assert "NaN" in answers["nan"].json()["error"]
    assert "UTF-8" in answers["utf-16"].json()["error"]
    assert bom.status_code == 200
    assert reached == [{"a": 1}]
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
