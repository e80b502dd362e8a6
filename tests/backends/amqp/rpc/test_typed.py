"""Typed bodies: a handler parameter annotated with a dataclass or a pydantic model gets the
decoded, validated body; a body that fails validation is rejected without requeue —
dead-lettered where the queue has a DLX — with a clear log line, never redelivered."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
import trio

from tests.backends.amqp.rpc.conftest import MUST_HAPPEN, Broker, serving
from tests.backends.amqp.rpc.test_rpc_route import next_reply, reply_queue
from trioworker import App, RemoteError, open_app
from trioworker.amqp import RPC_ERROR_HEADER, BasicProperties
from trioworker.backends.amqp._typed import InvalidBody, body_type


@dataclasses.dataclass
class AddRequest:
    a: int
    b: int = 0


class Item(pydantic.BaseModel):
    sku: str
    qty: pydantic.PositiveInt


MODELS: dict[str, type[Any]] = {"dataclass": AddRequest, "pydantic": Item}
VALID: dict[str, dict[str, Any]] = {
    "dataclass": {"a": 40, "b": 2},
    "pydantic": {"sku": "x", "qty": 3},
}
INVALID: dict[str, list[bytes]] = {
    "dataclass": [b'{"b": 1}', b'{"a": 1, "zzz": 2}', b"[1, 2]", b"not json"],
    "pydantic": [b'{"sku": "x", "qty": -1}', b'{"qty": 1}', b'"text"', b"not json"],
}


def result_of(value: Any) -> Any:
    if isinstance(value, AddRequest):
        return value.a + value.b
    assert isinstance(value, Item)
    return f"{value.qty} x {value.sku}"


# ------------------------------------------------------------------------------ unit


def test_body_type_reads_the_first_parameter_annotation() -> None:
    async def one(request: AddRequest) -> None: ...
    async def many(items: list[Item]) -> None: ...
    async def plain(messages: list[Any]) -> None: ...

    typed = body_type(one)
    assert typed is not None and typed.type is AddRequest and not typed.many
    typed = body_type(many)
    assert typed is not None and typed.type is Item and typed.many
    assert body_type(plain) is None
    with pytest.raises(InvalidBody, match="AddRequest"):
        body_type(one).validate({"nope": 1})  # type: ignore[union-attr]


def test_a_model_the_annotation_cannot_resolve_fails_at_registration() -> None:
    """This module has ``from __future__ import annotations``: ``list[LocalOrder]`` is a
    string, resolved in the module's globals, where a class defined in a function is not.
    Guessing "untyped" would hand the handler Messages where it expects LocalOrders."""

    @dataclasses.dataclass
    class LocalOrder:
        id: int

    async def handle(orders: list[LocalOrder]) -> None: ...
    async def get(order: LocalOrder) -> None: ...

    app = App(amqp_url="amqp://guest:guest@127.0.0.1:1/%2F")
    with pytest.raises(TypeError) as raised:
        app.amqp.consume("orders")(handle)
    message = str(raised.value)
    for part in ("handle", "'list[LocalOrder]'", "'orders'", "NameError", "module level"):
        assert part in message
    with pytest.raises(TypeError, match="'LocalOrder' of its parameter 'order'"):
        app.amqp.rpc("orders.get")(get)
    assert app.amqp.routes == [] and not app.amqp.active


def test_only_the_first_parameter_annotation_has_to_resolve() -> None:
    async def handle(items: Any) -> None: ...

    # A return annotation nobody can resolve does not matter ...
    handle.__annotations__ = {"items": "list[Item]", "return": "Missing"}
    typed = body_type(handle)
    assert typed is not None and typed.type is Item and typed.many
    # ... and a Message imported under TYPE_CHECKING only still means plain messages.
    for plain in ("list[Message]", "List[trioworker.Message]", "Message"):
        handle.__annotations__ = {"items": plain}
        assert body_type(handle) is None


# ---------------------------------------------------------------------------- broker


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["dataclass", "pydantic"])
async def test_rpc_handler_gets_the_validated_body(
    make_app: Callable[..., App], broker: Broker, kind: str
) -> None:
    queue = broker.name("rpc")
    app = make_app()
    model = MODELS[kind]
    received: list[Any] = []

    async def handler(request: Any) -> Any:
        received.append(request)
        return result_of(request)

    handler.__annotations__["request"] = model
    app.amqp.rpc(queue)(handler)

    async with open_app(app):
        await serving(app)
        result = await app.amqp.call(queue, VALID[kind], timeout=MUST_HAPPEN)
    assert received == [model(**VALID[kind])]
    assert result == result_of(model(**VALID[kind]))


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["dataclass", "pydantic"])
async def test_invalid_rpc_request_is_dead_lettered_answered_and_never_redelivered(
    make_app: Callable[..., App], broker: Broker, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    dead = await broker.queue("dead")
    queue = await broker.queue("rpc", dead_letter_to=dead)
    app = make_app()
    calls = 0

    async def handler(request: Any) -> Any:
        nonlocal calls
        calls += 1
        return result_of(request)

    handler.__annotations__["request"] = MODELS[kind]
    app.amqp.rpc(queue, declare=False)(handler)

    channel, replies = await reply_queue(broker)
    bad = INVALID[kind]
    async with open_app(app):
        await serving(app)
        for i, body in enumerate(bad):
            await broker.publish(
                queue,
                body,
                properties=BasicProperties(
                    reply_to=replies, correlation_id=f"bad-{i}", content_type="application/json"
                ),
            )
        answers = [await next_reply(channel, replies) for _ in bad]
        await broker.wait_ready(dead, len(bad))
        # the caller of a valid request is still served
        assert await app.amqp.call(queue, VALID[kind], timeout=MUST_HAPPEN) is not None
        await trio.sleep(0.5)  # a requeued request would come back meanwhile
    assert calls == 1  # only the valid one reached the handler
    assert sorted(a.properties.correlation_id or "" for a in answers) == sorted(
        f"bad-{i}" for i in range(len(bad))
    )
    for answer in answers:
        assert answer.properties.headers == {RPC_ERROR_HEADER: True}
        assert json.loads(answer.body)["error"]["type"] in ("InvalidBody", "CodecError")
    assert sorted(d.body for d in await broker.drain(dead)) == sorted(bad)
    assert await broker.ready(queue) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("rejected (not requeued)" in line for line in lines) == len(bad)


@pytest.mark.broker
async def test_invalid_rpc_request_raises_remote_error_for_the_caller(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    @app.amqp.rpc(queue)
    async def add(request: AddRequest) -> int:
        return request.a + request.b

    async with open_app(app):
        await serving(app)
        with pytest.raises(RemoteError) as caught:
            await app.amqp.call(queue, {"b": 2}, timeout=MUST_HAPPEN)
        assert await app.amqp.call(queue, {"a": 1, "b": 2}, timeout=MUST_HAPPEN) == 3
    assert caught.value.type == "InvalidBody"
    assert "AddRequest" in caught.value.message


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["dataclass", "pydantic"])
async def test_typed_consumer_dead_letters_invalid_bodies_and_handles_the_rest(
    make_app: Callable[..., App], broker: Broker, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    dead = await broker.queue("dead")
    queue = await broker.queue(dead_letter_to=dead)
    good = json.dumps(VALID[kind]).encode()
    bad = INVALID[kind]
    await broker.publish(queue, good, *bad, good)
    app = make_app()
    got: list[Any] = []
    bulks = 0

    async def handle(items: Any) -> None:
        nonlocal bulks
        bulks += 1
        got.extend(items)

    handle.__annotations__["items"] = list[MODELS[kind]]  # type: ignore[valid-type]
    app.amqp.consume(queue, bulk_size=10, flush_interval=0.2)(handle)

    async with open_app(app):
        await broker.wait_ready(dead, len(bad))
        with trio.fail_after(MUST_HAPPEN):
            while len(got) < 2:  # noqa: ASYNC110 - polling
                await trio.sleep(0.02)
        await trio.sleep(0.5)  # a requeued body would be redelivered meanwhile
    model = MODELS[kind]
    assert got == [model(**VALID[kind])] * 2
    assert sorted(d.body for d in await broker.drain(dead)) == sorted(bad)
    assert await broker.ready(queue) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("rejected (not requeued)" in line for line in lines) == len(bad)
    assert all(queue in line for line in lines if "rejected (not requeued)" in line)


def test_a_typed_consume_handler_must_take_a_list(make_app: Callable[..., App]) -> None:
    app = make_app()
    with pytest.raises(TypeError, match=r"list\[AddRequest\]"):

        @app.amqp.consume("q")
        async def handle(request: AddRequest) -> None: ...


def test_an_rpc_handler_takes_one_request_not_a_list(make_app: Callable[..., App]) -> None:
    app = make_app()
    with pytest.raises(TypeError, match="one request"):

        @app.amqp.rpc("q")
        async def handle(requests: list[AddRequest]) -> None: ...
