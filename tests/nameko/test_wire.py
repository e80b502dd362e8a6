"""Nameko's names, context headers and error envelope, without a broker or a Nameko.

The interop tests (test_events.py, test_rpc.py) prove these against the real Nameko; these
pin the details that a Nameko of the default configuration never shows (the stack limit,
odd headers, the refusals at registration).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from trioworker import App, Message, nameko
from trioworker.backends.nameko._context import context_from_headers
from trioworker.backends.nameko._events import event_queue
from trioworker.backends.nameko._wire import remote_error, serialize_error


def test_event_queues_are_named_and_flagged_as_nameko_declares_them() -> None:
    pool = event_queue(
        "payments", "paid", "service_pool", service="orders", method="on_paid",
        reliable_delivery=True, broadcast_identifier=None,
    )  # fmt: skip
    assert pool.name == "evt-payments-paid--orders.on_paid"
    assert (pool.durable, pool.auto_delete, pool.exclusive) == (True, False, False)
    binding = pool.bindings[0]
    assert (binding.exchange_ref.name, binding.exchange_ref.type, binding.routing_key) == (
        "payments.events",
        "topic",
        "paid",
    )
    single = event_queue(
        "payments", "paid", "singleton", service="orders", method="on_paid",
        reliable_delivery=False, broadcast_identifier=None,
    )  # fmt: skip
    assert single.name == "evt-payments-paid"
    assert (single.auto_delete, single.exclusive) == (True, False)
    broadcast = event_queue(
        "payments", "paid", "broadcast", service="orders", method="on_paid",
        reliable_delivery=False, broadcast_identifier="abc",
    )  # fmt: skip
    assert broadcast.name == "evt-payments-paid--orders.on_paid-abc"
    assert (broadcast.auto_delete, broadcast.exclusive) == (True, True)


def test_call_id_stack_keeps_ten_parents_and_our_id() -> None:
    parents = [f"svc.m.{n}" for n in range(15)]
    context = context_from_headers({"nameko.call_id_stack": parents}, "orders", "get")
    stack = context.call_id_stack
    assert len(stack) == 11
    assert stack[:10] == parents[-10:]
    assert stack[-1] == context.call_id and context.call_id.startswith("orders.get.")
    assert context.origin_call_id == "svc.m.0"
    assert context.immediate_parent_call_id == "svc.m.14"
    assert dataclasses.replace(context, parent_calls_tracked=0).call_id_stack == [context.call_id]


def test_context_reads_nameko_headers_only_and_drops_none_on_the_way_out() -> None:
    context = context_from_headers(
        {
            "nameko.user_id": "u-1",
            "nameko.language": b"fr",
            "nameko.call_id_stack": "not a list",  # bookkeeping gone wrong: ignored
            "x-trioworker-attempt": 2,
        },
        "orders",
        "get",
    )
    assert context.data == {"user_id": "u-1", "language": "fr"}
    assert context.parent_call_ids == ()
    with_none = dataclasses.replace(context, data={**context.data, "auth_token": None})
    assert with_none.headers() == {
        "nameko.user_id": "u-1",
        "nameko.language": "fr",
        "nameko.call_id_stack": [context.call_id],
    }


def test_use_context_sets_and_restores_the_current_context() -> None:
    context = context_from_headers(None, "orders", "get")
    assert nameko.current_context() is None
    with nameko.use_context(context):
        assert nameko.current_context() is context
    assert nameko.current_context() is None


class Declined(Exception):
    pass


@dataclasses.dataclass
class Paid:
    amount: int


def test_errors_serialize_as_nameko_does() -> None:
    assert serialize_error(Declined("no money", 10)) == {
        "exc_type": "Declined",
        "exc_path": f"{__name__}.Declined",
        "exc_args": ["no money", "10"],
        "value": "('no money', 10)",
    }
    assert serialize_error(nameko.MethodNotFound("x"))["exc_path"] == (
        "nameko.exceptions.MethodNotFound"
    )
    error = remote_error({"exc_type": "KeyError", "exc_path": "builtins.KeyError", "value": "'k'"})
    assert (error.type, error.message, error.exc_args) == ("KeyError", "'k'", [])
    assert remote_error("odd peer").exc_type == "RemoteError"


def test_registration_refuses_what_could_never_work() -> None:
    app = App(name="orders")
    with pytest.raises(ValueError, match="handler_type"):
        app.nameko.event_handler("payments", "paid", "fanout")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="declare"):
        app.nameko.event_handler("payments", "paid", declare=False)
    with pytest.raises(ValueError, match="dot"):
        app.nameko.rpc(name="get.one")
    with pytest.raises(TypeError, match="second parameter"):

        @app.nameko.event_handler("payments", "paid")
        async def wrong(message: Message) -> None: ...

    with pytest.raises(TypeError, match="list"):

        @app.nameko.event_handler("payments", "paid", bulk_size=10)
        async def one_model(paid: Paid) -> None: ...

    @app.nameko.rpc
    async def get(order_id: int) -> Any: ...

    with pytest.raises(ValueError, match="already registered"):
        app.nameko.rpc(name="get")(get)
    with pytest.raises(RuntimeError, match="before registering"):
        app.nameko.configure(rpc_concurrency=2)


def test_kombu_json_markers_round_trip_and_unknown_ones_stay_dicts() -> None:
    import uuid
    from datetime import date, datetime, time
    from decimal import Decimal

    from trioworker.backends.nameko._kombu_json import decode, encode

    value = {
        "at": datetime(2024, 1, 2, 3, 4, 5),
        "day": date(2024, 1, 2),
        "t": time(3, 4),
        "price": Decimal("9.99"),
        "id": uuid.UUID(int=1),
        "raw": b"\xff",
        "plain": [1, "x", None],
    }
    assert json.loads(encode(value))["at"] == {
        "__type__": "datetime",
        "__value__": "2024-01-02T03:04:05",
    }
    assert decode(encode(value)) == value
    future = {"__type__": "some-new-type", "__value__": 1}
    assert decode(json.dumps(future).encode()) == future
