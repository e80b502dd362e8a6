"""Codecs: json, raw, gzip+json (amqp_worker's wire format), user codecs, and the decoder
picked from a message's content_type/content_encoding — unit tests, then through the broker.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.backends.amqp.rpc.conftest import MUST_HAPPEN, Broker, serving
from tests.backends.amqp.rpc.test_rpc_route import next_reply, reply_queue
from trioworker import App, Codec, Message, open_app, register_codec
from trioworker.amqp import BasicProperties, rpc_client
from trioworker.codecs import CodecError, codec_for, get_codec

# ------------------------------------------------------------------------------ unit


def test_json_round_trip_and_properties() -> None:
    codec = get_codec("json")
    body = codec.encode({"a": [1, 2.5, None, "é"]})
    assert json.loads(body.decode("utf-8")) == {"a": [1, 2.5, None, "é"]}
    assert codec.decode(body) == {"a": [1, 2.5, None, "é"]}
    assert (codec.content_type, codec.content_encoding) == ("application/json", None)


def test_json_encodes_dataclasses() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    assert json.loads(get_codec("json").encode(Point(1, 2))) == {"x": 1, "y": 2}


def test_raw_passes_bytes_through() -> None:
    codec = get_codec("raw")
    assert codec.encode(b"\x00\xff") == b"\x00\xff"
    assert codec.encode("é") == "é".encode()
    assert codec.decode(b"\x00\xff") == b"\x00\xff"
    assert codec.content_type == "application/octet-stream"
    with pytest.raises(CodecError, match="raw"):
        codec.encode({"not": "bytes"})


def test_gzip_json_is_gzip_compressed_utf8_json_with_content_encoding_gzip() -> None:
    codec = get_codec("gzip+json")
    value = {"name": "Zoë", "items": list(range(50))}
    body = codec.encode(value)
    assert body[:2] == b"\x1f\x8b"  # the gzip magic
    assert json.loads(gzip.decompress(body).decode("utf-8")) == value
    assert codec.decode(gzip.compress(json.dumps(value).encode("utf-8"))) == value
    assert (codec.content_type, codec.content_encoding) == ("application/json", "gzip")


@pytest.mark.parametrize(
    ("name", "body"),
    [("json", b"{not json"), ("json", b"\xff\xfe"), ("gzip+json", b"not gzip")],
)
def test_invalid_bodies_raise_codec_error(name: str, body: bytes) -> None:
    with pytest.raises(CodecError, match=name.replace("+", r"\+")):
        get_codec(name).decode(body)


def test_unencodable_values_raise_codec_error() -> None:
    with pytest.raises(CodecError, match="json"):
        get_codec("json").encode({"s": {1, 2}})


def test_unknown_codec_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"gzip\+json.*json.*raw"):
        get_codec("yaml")


def make_kv_codec() -> Codec:
    """A user codec: ``k=v;k=v`` bodies, with a content type of its own."""
    name = f"kv-{secrets.token_hex(3)}"

    def encode(value: dict[str, str]) -> bytes:
        return ";".join(f"{k}={v}" for k, v in value.items()).encode()

    def decode(body: bytes) -> dict[str, str]:
        return dict(pair.split("=", 1) for pair in body.decode().split(";") if pair)

    return Codec(name, content_type=f"text/x-{name}", encode=encode, decode=decode)


def test_register_codec_by_name_and_refuse_duplicates() -> None:
    codec = register_codec(make_kv_codec())
    assert get_codec(codec.name) is codec
    with pytest.raises(ValueError, match="already registered"):
        register_codec(Codec(codec.name, content_type="x/y", encode=bytes, decode=bytes))
    assert get_codec(codec.name) is codec


def test_codec_for_picks_the_decoder_from_the_properties() -> None:
    kv = register_codec(make_kv_codec())
    json_codec, gz = get_codec("json"), get_codec("gzip+json")
    assert codec_for("application/json", "gzip", json_codec) is gz
    assert codec_for("application/json", None, gz) is json_codec
    assert codec_for(kv.content_type, None, json_codec) is kv
    assert codec_for("application/octet-stream", None) is get_codec("raw")
    # nothing set, or nothing registered for it: the route's codec
    assert codec_for(None, None, gz) is gz
    assert codec_for("application/x-unknown", None, kv) is kv


# ---------------------------------------------------------------------------- broker


@dataclasses.dataclass
class Order:
    item: str
    qty: int


@pytest.mark.broker
async def test_gzip_json_request_from_an_amqp_worker_style_producer_gets_a_gzip_reply(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = broker.name("rpc")
    app = make_app()

    # The route's codec is json; it accepts gzip+json too, and the request's properties
    # pick among what it accepts.
    @app.amqp.rpc(queue, accept=("gzip+json",))
    async def total(order: Order) -> dict[str, Any]:
        return {"item": order.item, "total": order.qty * 2}

    channel, replies = await reply_queue(broker)
    async with open_app(app):
        await serving(app)
        body = gzip.compress(json.dumps({"item": "pen", "qty": 21}).encode("utf-8"))
        await broker.publish(
            queue,
            body,
            properties=BasicProperties(
                reply_to=replies,
                correlation_id="gz",
                content_type="application/json",
                content_encoding="gzip",
            ),
        )
        reply = await next_reply(channel, replies)
    assert reply.properties.content_encoding == "gzip"
    assert reply.properties.content_type == "application/json"
    assert json.loads(gzip.decompress(reply.body).decode("utf-8")) == {"item": "pen", "total": 42}


@pytest.mark.broker
@pytest.mark.parametrize("codec", ["json", "gzip+json", "raw", "user"])
async def test_call_and_route_with_each_codec(
    make_app: Callable[..., App], broker: Broker, amqp_url: str, codec: str
) -> None:
    use: str | Codec = register_codec(make_kv_codec()) if codec == "user" else codec
    payload: Any = {
        "json": {"n": [1, 2]},
        "gzip+json": {"n": [1, 2]},
        "raw": b"\x00bytes\xff",
        "user": {"a": "1", "b": "two"},
    }[codec]
    queue = broker.name("rpc")
    app = make_app()
    seen: list[bytes] = []

    @app.amqp.rpc(queue, codec=use)
    async def echo(message: Message) -> Any:
        seen.append(message.body)
        return get_codec(use).decode(message.body)

    async with open_app(app), rpc_client(amqp_url, codec=use) as client:
        await serving(app)
        result = await client.call(queue, payload, timeout=MUST_HAPPEN)
    assert result == payload
    assert seen == [get_codec(use).encode(payload)]


@pytest.mark.broker
async def test_a_typed_consumer_picks_each_message_decoder_among_those_it_accepts(
    make_app: Callable[..., App], broker: Broker
) -> None:
    kv_orders = register_codec(
        Codec(
            f"orders-{secrets.token_hex(3)}",
            content_type="text/x-order",
            encode=lambda o: f"{o['item']}*{o['qty']}".encode(),
            decode=lambda b: {"item": b.decode().split("*")[0], "qty": int(b.split(b"*")[1])},
        )
    )
    queue = await broker.queue()
    await broker.publish(
        queue,
        b'{"item": "a", "qty": 1}',
        properties=BasicProperties(content_type="application/json"),
    )
    await broker.publish(
        queue,
        get_codec("gzip+json").encode({"item": "b", "qty": 2}),
        properties=BasicProperties(content_type="application/json", content_encoding="gzip"),
    )
    await broker.publish(
        queue,
        kv_orders.encode({"item": "c", "qty": 3}),
        properties=BasicProperties(content_type="text/x-order"),
    )
    await broker.publish(queue, b'{"item": "d", "qty": 4}')  # no properties: the route's codec
    app = make_app()
    got: list[Order] = []
    done = trio.Event()

    @app.amqp.consume(queue, accept=("gzip+json", kv_orders))
    async def handle(orders: list[Order]) -> None:
        got.extend(orders)
        if len(got) == 4:
            done.set()

    async with open_app(app):
        with trio.fail_after(MUST_HAPPEN):
            await done.wait()
    assert got == [Order("a", 1), Order("b", 2), Order("c", 3), Order("d", 4)]
    assert await broker.ready(queue) == 0
