"""Bounded decoding (issue 11, item 4) and the route's choice of decoders; ``Message.json()``
with the route's codecs and a typed handler's second ``Message`` parameter (issue 12)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import resource
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.backends.amqp.rpc.conftest import MUST_HAPPEN, Broker, serving
from tests.backends.amqp.rpc.test_rpc_route import next_reply, reply_queue
from trioworker import App, Message, open_app
from trioworker.amqp import BasicProperties
from trioworker.codecs import (
    DEFAULT_MAX_DECODED_SIZE,
    BodyTooLargeError,
    CodecError,
    get_codec,
    resolve_decoder,
)

GZIP = BasicProperties(content_type="application/json", content_encoding="gzip")


def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """About 1 MB of gzip that inflates to ``inflated`` bytes (1 GiB), built in pieces."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1 << 20)
    parts = [deflater.compress(b"[" + block[1:])]
    parts.extend(deflater.compress(block) for _ in range(inflated // len(block) - 1))
    parts.append(deflater.flush())
    return b"".join(parts)


BOMB = gzip_bomb()


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------ codecs


def test_the_bomb_is_about_a_megabyte() -> None:
    assert 0.9e6 < len(BOMB) < 1.2e6


def test_gunzip_stops_at_the_limit_and_never_inflates_past_it() -> None:
    codec = get_codec("gzip+json")
    assert codec.max_size == DEFAULT_MAX_DECODED_SIZE == 16 * 1024 * 1024
    before = maxrss_mb()
    with pytest.raises(BodyTooLargeError, match=r"gzip\+json body inflates past the limit"):
        codec.decode(BOMB)
    assert maxrss_mb() - before < 100


def test_limits_are_per_codec_and_apply_to_plain_bodies_too() -> None:
    small = get_codec("gzip+json").limited(10)
    assert small.name == "gzip+json" and small.content_encoding == "gzip"
    assert small.decode(gzip.compress(b"[1,2,3,4]")) == [1, 2, 3, 4]  # 9 bytes
    with pytest.raises(BodyTooLargeError):
        small.decode(gzip.compress(b"[1,2,3,4,5]"))
    with pytest.raises(BodyTooLargeError, match="is larger than the limit of 3 bytes"):
        get_codec("json").limited(3).decode(b"[1,2]")
    assert get_codec("json").limited(5).decode(b"[1,2]") == [1, 2]


def test_gunzip_reads_every_member_and_refuses_garbage_and_truncation() -> None:
    codec = get_codec("gzip+json")
    assert codec.decode(gzip.compress(b"[1,") + gzip.compress(b"2]")) == [1, 2]
    whole = gzip.compress(b'{"a": 1}')
    with pytest.raises(CodecError, match="truncated"):
        codec.decode(whole[:-6])
    with pytest.raises(CodecError, match=r"not valid gzip\+json"):
        codec.decode(b"not gzip")


def test_a_consumer_decodes_only_what_it_accepts() -> None:
    json_codec, gz = get_codec("json"), get_codec("gzip+json")
    # The message's compression is not obeyed unless the consumer accepts it.
    with pytest.raises(CodecError, match=r"'gzip' .* not accepted"):
        resolve_decoder("application/json", "gzip", json_codec)
    assert resolve_decoder("application/json", "gzip", json_codec, (gz,)) is gz
    # Nothing said, or only an unknown content type: the consumer's codec.
    assert resolve_decoder(None, None, gz) is gz
    assert resolve_decoder("text/plain", None, json_codec) is json_codec
    assert resolve_decoder("application/octet-stream", None, json_codec) is json_codec
    assert resolve_decoder("application/octet-stream", None, json_codec, (get_codec("raw"),)) is (
        get_codec("raw")
    )


# ------------------------------------------------------------------------ broker


@dataclasses.dataclass
class Order:
    item: str
    qty: int


@pytest.mark.broker
@pytest.mark.parametrize("accept", [(), ("gzip+json",)], ids=["json-only", "accepts-gzip"])
async def test_a_gzip_bomb_fails_its_message_only_with_bounded_memory_and_a_live_loop(
    make_app: Callable[..., App], broker: Broker, accept: tuple[str, ...]
) -> None:
    queue = await broker.queue()
    await broker.publish(queue, BOMB, properties=GZIP)
    await broker.publish(
        queue, get_codec("gzip+json").encode({"item": "ok", "qty": 1}), properties=GZIP
    )
    await broker.publish(queue, b'{"item": "plain", "qty": 2}')
    app = make_app()
    got: list[Order] = []
    done = trio.Event()
    lags: list[float] = []

    @app.amqp.consume(queue, accept=accept)
    async def handle(orders: list[Order]) -> None:
        got.extend(orders)
        if len(got) == (2 if accept else 1):
            done.set()

    async def ticker() -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(0.005)
            lags.append(trio.current_time() - before - 0.005)

    before = maxrss_mb()
    async with open_app(app), trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        with trio.fail_after(MUST_HAPPEN):
            await done.wait()
        nursery.cancel_scope.cancel()
    grown = maxrss_mb() - before
    expected = [Order("ok", 1), Order("plain", 2)] if accept else [Order("plain", 2)]
    assert got == expected
    assert grown < 100, f"RSS grew by {grown:.0f} MB"
    assert max(lags, default=0.0) < 0.5, f"the event loop stalled for {max(lags):.2f} s"
    # The bomb (and, on a json-only route, the gzip message) was rejected, not requeued.
    assert await broker.ready(queue) == 0


@pytest.mark.broker
async def test_message_json_uses_the_codecs_the_route_accepts(
    make_app: Callable[..., App], broker: Broker
) -> None:
    strict, lenient = await broker.queue(), await broker.queue()
    for queue in (strict, lenient):
        await broker.publish(queue, get_codec("gzip+json").encode({"n": 1}), properties=GZIP)
        await broker.publish(queue, BOMB, properties=GZIP)
        await broker.publish(queue, b'{"n": 3}')
    app = make_app()
    seen: dict[str, list[Any]] = {strict: [], lenient: []}
    decisions: dict[str, list[Any]] = {strict: [], lenient: []}

    async def record(messages: list[Message]) -> None:
        for m in messages:
            try:
                seen[m.queue].append(m.json())
            except ValueError as exc:
                seen[m.queue].append(type(exc).__name__)
            decisions[m.queue].append(m.decision)

    app.amqp.consume(strict, bulk_size=3, flush_interval=0.2)(record)
    app.amqp.consume(lenient, bulk_size=3, flush_interval=0.2, accept=["gzip+json"])(record)
    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            while len(seen[strict]) + len(seen[lenient]) < 6:  # noqa: ASYNC110 - polling
                await trio.sleep(0.01)
    assert seen[lenient] == [{"n": 1}, "InvalidMessageBody", {"n": 3}]
    assert seen[strict] == ["InvalidMessageBody", "InvalidMessageBody", {"n": 3}]
    assert [d.name if d else None for d in decisions[lenient]] == [None, "REJECT", None]


@pytest.mark.broker
async def test_typed_handlers_get_their_messages_as_a_second_parameter(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue()
    rpc_queue = broker.name("rpc")
    await broker.publish(
        queue,
        b'{"item": "a", "qty": 1}',
        properties=BasicProperties(headers={"tenant": "t1"}),
    )
    await broker.publish(queue, b'{"item": "b", "qty": 0}')
    app = make_app()
    got: list[tuple[Order, str | None]] = []
    done = trio.Event()

    @app.amqp.consume(queue, bulk_size=2, flush_interval=0.2)
    async def handle(orders: list[Order], messages: list[Message]) -> None:
        for order, message in zip(orders, messages, strict=True):
            got.append((order, message.headers.get("tenant")))
            if order.qty == 0:
                message.reject(requeue=False)  # a per-message decision of a typed handler
        if len(got) == 2:
            done.set()

    @app.amqp.rpc(rpc_queue)
    async def total(order: Order, message: Message) -> dict[str, Any]:
        return {"total": order.qty * 2, "correlation_id": message.properties.correlation_id}

    channel, replies = await reply_queue(broker)
    async with open_app(app):
        await serving(app)
        with trio.fail_after(MUST_HAPPEN):
            await done.wait()
        await broker.publish(
            rpc_queue,
            json.dumps({"item": "x", "qty": 21}).encode(),
            properties=BasicProperties(reply_to=replies, correlation_id="c-1"),
        )
        reply = await next_reply(channel, replies)
    assert got == [(Order("a", 1), "t1"), (Order("b", 0), None)]
    assert json.loads(reply.body) == {"total": 42, "correlation_id": "c-1"}
    assert await broker.ready(queue) == 0


def test_a_second_parameter_of_the_wrong_shape_fails_at_registration(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    with pytest.raises(TypeError, match=r"annotate it list\[Message\]"):

        @app.amqp.consume("q")
        async def handle(orders: list[Order], message: Message) -> None: ...
