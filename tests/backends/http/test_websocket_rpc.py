"""``app.http.websocket_rpc``: micro_framework's WebSocket RPC JSON over a real socket.

The client builds requests as micro_framework's ``format_rpc_command`` does and reads the
answers as its ``parse_rpc_response`` does (the exception fields it rebuilds an exception
from: ``exception``, ``message``, ``args``, ``kwargs``, ``module``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio
import trio.lowlevel

from trioworker import App, open_app

from .conftest import MUST_HAPPEN
from .websocket_client import in_thread, open_ws, ws_url

MakeApp = Callable[..., App]


def format_rpc_command(command: str, *args: Any, **kwargs: Any) -> str:
    """micro_framework.rpc.formatters.format_rpc_command."""
    return json.dumps({"command": command, "command_args": args, "command_kwargs": kwargs})


class OutOfStock(Exception):
    pass


def add(a: int, b: int = 0) -> int:
    """Add two numbers."""
    return a + b


async def reserve(item: str, *, qty: int = 1) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    if item == "apples":
        raise OutOfStock(f"no {item} left", qty)
    return {"item": item, "qty": qty}


def calls(url: str, requests: list[str | bytes]) -> list[dict[str, Any]]:
    """Send each request on one connection and read each answer (a text frame)."""
    answers = []
    with open_ws(url) as ws:
        for request in requests:
            ws.send(request)
            answer = ws.recv(timeout=MUST_HAPPEN)
            assert isinstance(answer, str)
            answers.append(json.loads(answer))
    return answers


async def test_results_and_exceptions_in_micro_frameworks_json(make_app: MakeApp) -> None:
    app = make_app()
    app.http.websocket_rpc("/rpc", {"add": add, "reserve": reserve, "opaque": object})

    async with open_app(app):
        answers = await in_thread(
            calls,
            ws_url(app, "/rpc"),
            [
                format_rpc_command("add", 1, 2),
                format_rpc_command("add", 40, b=2).encode(),  # a binary frame works too
                format_rpc_command("reserve", "pears", qty=3),
                format_rpc_command("reserve", "apples", qty=2),
                format_rpc_command("add", 1, 2, 3),  # wrong arguments
                format_rpc_command("missing"),
                "not json",
                json.dumps({"command_args": []}),
                format_rpc_command("opaque"),
            ],
        )
    assert answers[:3] == [
        {"data": 3, "exception": None},
        {"data": 42, "exception": None},
        {"data": {"item": "pears", "qty": 3}, "exception": None},
    ]
    assert answers[3] == {
        "data": None,
        "exception": {
            "exception": "OutOfStock",
            "message": "('no apples left', 2)",
            "args": ["no apples left", 2],
            "kwargs": {},
            "module": __name__,
        },
    }
    kinds = [a["exception"]["exception"] for a in answers[4:]]
    assert kinds == [
        "TypeError",
        "RPCTargetDoesNotExist",
        "RPCMalformedMessage",
        "RPCMalformedMessage",
        "TypeError",  # a result JSON cannot encode
    ]
    assert all(a["data"] is None for a in answers[3:])


async def test_list_and_get_targets_as_micro_frameworks_proxy_reads_them(
    make_app: MakeApp,
) -> None:
    app = make_app()
    app.http.websocket_rpc("/rpc", [add, reserve])  # named by __name__

    async with open_app(app):
        listed, one = await in_thread(
            calls,
            ws_url(app, "/rpc"),
            [format_rpc_command("__list_targets__"), format_rpc_command("__get_target__", "add")],
        )
    assert listed == {
        "data": [
            {"target": "add", "args": ["a"], "kwargs": ["b"], "docstring": "Add two numbers."},
            {"target": "reserve", "args": ["item"], "kwargs": ["qty"], "docstring": None},
        ],
        "exception": None,
    }
    assert one == {"data": listed["data"][0], "exception": None}
