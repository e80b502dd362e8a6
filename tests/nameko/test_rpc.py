"""Nameko RPC both ways, against a real Nameko 2.14.1 service (tests/nameko/peer.py) and
Nameko's standalone proxies (``ClusterRpcProxy``, ``ServiceRpcProxy``) run as scripts.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
import trio

import trioworker
from tests.nameko.conftest import NamekoPeer
from tests.support import rabbitmqctl
from tests.support.broker import Broker, eventually
from trioworker import App, nameko, open_app
from trioworker.amqp import BasicProperties

pytestmark = [pytest.mark.broker, pytest.mark.interop, pytest.mark.slow]


class PaymentDeclined(Exception):
    """An exception of ours, as a Nameko caller should see it."""


def stack_shape(stack: list[str]) -> list[str]:
    return [call_id.rsplit(".", 1)[0] for call_id in stack]


def serving_app(peer: NamekoPeer, make_app: Callable[..., App]) -> App:
    """Our service, with the methods Nameko's proxies call."""
    app = make_app(name=peer.our)
    peer.queues.append(app.nameko.reply_queue)

    @app.nameko.rpc
    async def add(a: int, b: int) -> int:
        return a + b

    @app.nameko.rpc(name="multiply")
    def mul(a: int, b: int) -> int:  # a plain def: runs in a thread, context and all
        context = nameko.current_context()
        assert context is not None and context.call_id.startswith(f"{peer.our}.multiply.")
        return a * b

    @app.nameko.rpc
    async def charge(amount: int) -> None:
        raise PaymentDeclined(f"card refused for {amount}", amount)

    @app.nameko.rpc(timeout=0.2)
    async def slow() -> None:
        await trio.sleep(30)

    @app.nameko.rpc
    async def whoami() -> dict[str, Any]:
        context = nameko.current_context()
        assert context is not None
        return {"call_id_stack": context.call_id_stack, "data": dict(context.data)}

    @app.nameko.rpc
    async def nested() -> Any:
        # A call made while handling carries the context on (and our own call id).
        return await app.nameko.call(peer.name, "context")

    return app


PROXY_SCRIPT = """
import json, os, sys
from nameko.exceptions import RemoteError, RpcTimeout
from nameko.standalone.rpc import ClusterRpcProxy, ServiceRpcProxy

config = {"AMQP_URI": os.environ["AMQP_URI"]}
our = os.environ["OUR_SERVICE"]
out = {}

def attempt(key, call):
    try:
        out[key] = {"result": call()}
    except RemoteError as exc:
        out[key] = {"remote": [exc.exc_type, exc.value]}
    except RpcTimeout:
        sys.exit(f"no reply to {key} within the proxy's timeout")
    except Exception as exc:
        name = type(exc).__module__ + "." + type(exc).__name__
        out[key] = {"raised": name, "args": list(exc.args)}

with ClusterRpcProxy(
    config, context_data={"user_id": "u-1", "language": "fr"}, timeout=20
) as cluster:
    service = cluster[our]
    attempt("add", lambda: service.add(1, 2))
    attempt("add_kwargs", lambda: service.add(a=2, b=5))
    attempt("multiply", lambda: service.multiply(6, 7))
    attempt("missing", lambda: service.nope())
    attempt("signature", lambda: service.add(1))
    attempt("signature_kwarg", lambda: service.add(1, c=2))
    attempt("charge", lambda: service.charge(10))
    attempt("slow", lambda: service.slow())
    attempt("whoami", lambda: service.whoami())
    attempt("nested", lambda: service.nested())
with ServiceRpcProxy(our, config, timeout=20) as proxy:
    attempt("service_proxy", lambda: proxy.add(20, 22))
print(json.dumps(out))
"""


async def test_nameko_proxies_call_our_methods(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    peer = nameko_peer
    app = serving_app(peer, make_app)
    async with open_app(app):
        out = json.loads(await peer.run_script(PROXY_SCRIPT))
    assert out["add"] == {"result": 3}
    assert out["add_kwargs"] == {"result": 7}
    assert out["multiply"] == {"result": 42}
    assert out["service_proxy"] == {"result": 42}
    # Our refusals come back as Nameko's own exception classes.
    assert out["missing"] == {"raised": "nameko.exceptions.MethodNotFound", "args": ["nope"]}
    assert out["signature"]["raised"] == "nameko.exceptions.IncorrectSignature"
    assert "'b'" in out["signature"]["args"][0]
    assert out["signature_kwarg"]["raised"] == "nameko.exceptions.IncorrectSignature"
    # Our own exception: its type and message (no traceback crosses).
    assert out["charge"] == {"remote": ["PaymentDeclined", "('card refused for 10', 10)"]}
    assert out["slow"] == {"remote": ["TimeoutError", "slow did not finish within 0.2 s"]}
    # The caller's context: its stack and data, and our own call id on top.
    whoami = out["whoami"]["result"]
    assert stack_shape(whoami["call_id_stack"]) == [
        "standalone_rpc_proxy.call",
        f"{peer.our}.whoami",
    ]
    assert whoami["data"] == {"user_id": "u-1", "language": "fr"}
    # ... passed on to the Nameko service we call while handling.
    nested = out["nested"]["result"]
    assert stack_shape(nested["call_id_stack"]) == [
        "standalone_rpc_proxy.call",
        f"{peer.our}.nested",
        f"{peer.name}.context",
    ]
    assert nested["data"] == {"user_id": "u-1", "language": "fr"}


async def test_we_call_nameko_methods(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    peer = nameko_peer
    app = make_app(name=peer.our)
    peer.queues.append(app.nameko.reply_queue)
    async with open_app(app):
        assert await app.nameko.call(peer.name, "add", 1, 2) == 3
        assert await app.nameko.call(peer.name, "add", a="x", b="y") == "xy"

        results: dict[int, int] = {}

        async def one(n: int) -> None:
            results[n] = await app.nameko.call(peer.name, "add", n, 1000)

        async with trio.open_nursery() as nursery:  # one reply queue for all of them
            for n in range(30):
                nursery.start_soon(one, n)
        assert results == {n: n + 1000 for n in range(30)}

        with pytest.raises(nameko.RemoteError) as raised:
            await app.nameko.call(peer.name, "fail", "boom")
        error = raised.value
        assert isinstance(error, trioworker.RemoteError)
        assert (error.exc_type, error.exc_path, error.value, error.exc_args) == (
            "ValueError",
            "builtins.ValueError",
            "boom",
            ["boom"],
        )
        with pytest.raises(nameko.RemoteError) as raised:
            await app.nameko.call(peer.name, "nope")
        assert raised.value.exc_path == "nameko.exceptions.MethodNotFound"
        with pytest.raises(nameko.RemoteError) as raised:
            await app.nameko.call(peer.name, "add", 1)
        assert raised.value.exc_type == "IncorrectSignature"

        # An unknown service fails at once, long before the timeout.
        with pytest.raises(nameko.UnknownService, match="nobody_here"):
            await app.nameko.call(f"nobody_here{secrets.token_hex(2)}", "x", timeout=20)


async def test_kombu_typed_values_travel_as_their_types_both_ways(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    """kombu writes datetimes, decimals, UUIDs and bytes as ``{"__type__", "__value__"}``
    markers and reads them back: a value we send reaches Nameko as its type, and one Nameko
    sends reaches our handler as its type."""
    peer = nameko_peer
    app = make_app(name=peer.our)
    peer.queues.append(app.nameko.reply_queue)

    @app.nameko.rpc
    async def echo_type(value: Any) -> list[Any]:
        return [type(value).__name__, value]

    values = [
        datetime(2024, 1, 2, 3, 4, 5, 6),
        date(2024, 1, 2),
        time(3, 4, 5),
        Decimal("1.10"),
        uuid.UUID(int=7),
        b"text bytes",
        b"\xff\x00 not utf-8",
    ]
    async with open_app(app):
        for value in values:
            expected = [type(value).__name__, value]
            assert await app.nameko.call(peer.name, "typed", value) == expected
            # Nameko's RpcProxy calling our method with it, and our reply read by Nameko.
            assert await app.nameko.call(peer.name, "relay", "echo_type", value) == expected


async def test_context_goes_round_trip(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    """our call → peer.relay → our whoami: each hop adds its call id."""
    peer = nameko_peer
    app = serving_app(peer, make_app)
    async with open_app(app):
        seen = await app.nameko.call(peer.name, "relay", "whoami")
    assert stack_shape(seen["call_id_stack"]) == [
        f"{peer.our}.call",
        f"{peer.name}.relay",
        f"{peer.our}.whoami",
    ]


async def request(broker: Broker, routing_key: str, body: bytes) -> dict[str, Any]:
    """Send a raw request the way a Nameko caller would, and return the decoded reply."""
    reply_key = secrets.token_hex(8)
    queue = await broker.queue("nameko-reply")
    channel = await broker.channel()
    await channel.queue_bind(queue, "nameko-rpc", reply_key)
    publisher = await broker.conn.open_channel()
    await publisher.confirm_select()
    await publisher.basic_publish(
        body,
        exchange="nameko-rpc",
        routing_key=routing_key,
        properties=BasicProperties(
            reply_to=reply_key,
            correlation_id="c-1",
            content_type="application/json",
            content_encoding="utf-8",
        ),
    )
    delivery = await eventually(lambda: channel.basic_get(queue, no_ack=True), bool)
    assert delivery is not None and delivery.properties.correlation_id == "c-1"
    reply: dict[str, Any] = json.loads(delivery.body)
    return reply


async def test_malformed_requests_get_nameko_errors(
    nameko_peer: NamekoPeer, make_app: Callable[..., App], broker: Broker
) -> None:
    peer = nameko_peer
    app = serving_app(peer, make_app)
    async with open_app(app):
        ok = await request(broker, f"{peer.our}.add", b'{"args": [1, 2], "kwargs": {}}')
        no_kwargs = await request(broker, f"{peer.our}.add", b'{"args": [1, 2]}')
        not_json = await request(broker, f"{peer.our}.add", b"{nope")
    assert ok == {"result": 3, "error": None}
    for reply in (no_kwargs, not_json):
        assert reply["result"] is None
        assert reply["error"]["exc_type"] == "MalformedRequest"
        assert reply["error"]["exc_path"] == "nameko.exceptions.MalformedRequest"


async def test_a_call_survives_the_loss_of_the_publishing_connection(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    """The reply queue is durable: cut the connection its consumer is on while the Nameko
    method runs, and the reply is consumed on the next connection."""
    peer = nameko_peer
    app = make_app(name=peer.our)
    peer.queues.append(app.nameko.reply_queue)
    results: list[int] = []
    async with open_app(app):
        assert await app.nameko.call(peer.name, "add", 0, 0) == 0  # the reply queue is up

        async def slow_call() -> None:
            results.append(await app.nameko.call(peer.name, "add_slowly", 1, 2, 2.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            await trio.sleep(0.5)  # the request is out, the method sleeping
            closed = await rabbitmqctl.close_connection_by_name_async(
                f"{app.name}:default:publish", "interop test: publishing connection cut"
            )
            assert closed == 1
    assert results == [3]
