"""``codec="amqp_worker"`` against amqp_worker's own clients, over the real broker.

The RPC client is the pika ``Client`` of amqp_worker's README (lib-python-amqp-worker):
a gzip-compressed JSON ``{"data": X}`` request with ``reply_to`` an exclusive,
auto-delete queue and a ``correlation_id``; the reply read back as gzip JSON. The producer
publishes as amqp_worker's ``QueueWorker`` side does (aio-pika's ``Master.create_task``:
gzip JSON ``{"data": X}`` to the default exchange, ``application/octet-stream``,
persistent). Both run unchanged against trioworker routes.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest
import trio

from tests.backends.amqp.rpc.conftest import MUST_HAPPEN, Broker, serving
from trioworker import App, Message, RemoteError, open_app
from trioworker.codecs import amqp_worker_codec, codec_for, get_codec

pytestmark = pytest.mark.broker


class Client:
    """amqp_worker README's RPC client (pika), plus the reply's properties kept for checks
    and a deadline instead of waiting forever."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.channel = channel
        result = self.channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(
            queue=self.callback_queue, on_message_callback=self._on_response, auto_ack=True
        )

    def _on_response(self, _: Any, __: Any, props: Any, body: bytes) -> None:
        if self.correlation_id == props.correlation_id:
            self.response = json.loads(gzip.decompress(body).decode("UTF8"))
            self.properties = props

    def call(self, target_queue: str, message: Any, body: bytes | None = None) -> Any:
        """Send ``message`` as the README does (or ``body`` as it is) and return the reply."""
        self.response = None
        self.correlation_id = str(uuid.uuid4())
        message_props = pika.BasicProperties(
            reply_to=self.callback_queue, correlation_id=self.correlation_id
        )
        message_as_dict = {"data": message}
        self.channel.basic_publish(
            exchange="",
            routing_key=target_queue,
            properties=message_props,
            body=body or gzip.compress(json.dumps(message_as_dict).encode("UTF8")),
        )
        deadline = time.monotonic() + MUST_HAPPEN
        while self.response is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply from {target_queue!r}")
            self.connection.process_data_events(time_limit=0.2)
        return self.response


def readme_calls(url: str, calls: list[tuple[str, Any, bytes | None]]) -> list[tuple[Any, Any]]:
    """Run the README client for each (queue, message, raw body): (reply, properties)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        client = Client(connection, connection.channel())
        return [(client.call(q, m, body), client.properties) for q, m, body in calls]
    finally:
        connection.close()


def queue_worker_publish(url: str, queue: str, bodies: list[bytes]) -> None:
    """Publish as amqp_worker's QueueWorker producers do (aio-pika ``Master.create_task``)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=body,
                properties=pika.BasicProperties(
                    content_type="application/octet-stream", delivery_mode=2
                ),
            )
    finally:
        connection.close()


def gzip_json(value: Any) -> bytes:
    return gzip.compress(json.dumps(value).encode("UTF8"))


async def test_the_readme_rpc_client_gets_results_and_errors(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    route, failing, traced = broker.name("aw"), broker.name("aw-fail"), broker.name("aw-trace")
    app = make_app()
    seen: list[Any] = []

    @app.amqp.rpc(route, codec="amqp_worker")
    async def handler(data):  # type: ignore[no-untyped-def]  # amqp_worker's own signature
        seen.append(data)
        return f"data received {data}"

    @app.amqp.rpc(failing, codec="amqp_worker")
    async def fail(data: Any) -> None:
        raise ValueError("bad value", data)

    @app.amqp.rpc(traced, codec=amqp_worker_codec(trace=True))
    async def fail_traced(data: Any, message: Message) -> None:
        assert message.properties.reply_to  # a second parameter annotated Message gets it
        raise KeyError(data)

    async with open_app(app):
        await serving(app)
        (ok, ok_props), (error, error_props), (traced_error, _) = await trio.to_thread.run_sync(
            readme_calls,
            amqp_url,
            [(route, "a message", None), (failing, {"n": 1}, None), (traced, "k", None)],
        )
    assert ok == {"success": True, "data": "data received a message"}
    assert seen == ["a message"]  # the handler got X of {"data": X}, not the message
    assert ok_props.content_type == "application/octet-stream"
    assert ok_props.content_encoding is None
    assert ok_props.type == "result"
    assert not ok_props.headers  # no trioworker header: the wire is amqp_worker's
    assert error == {
        "success": False,
        "error": {
            "type": "ValueError",
            "message": "ValueError('bad value', {'n': 1})",  # repr(), as amqp_worker sends
            "args": ["bad value", {"n": 1}],
        },
    }
    assert error_props.type == "error"
    assert traced_error["error"]["type"] == "KeyError"
    assert "Traceback (most recent call last)" in traced_error["error"]["trace"]
    assert "fail_traced" in traced_error["error"]["trace"]
    for queue in (route, failing, traced):
        assert await broker.ready(queue) == 0  # every request acknowledged


async def test_malformed_requests_are_rejected_with_an_error_reply(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    route, small = broker.name("aw"), broker.name("aw-small")
    app = make_app()
    called: list[Any] = []

    @app.amqp.rpc(route, codec="amqp_worker")
    async def handler(data: Any) -> Any:
        called.append(data)
        return data

    @app.amqp.rpc(small, codec=amqp_worker_codec(max_size=1024))
    async def bounded(data: Any) -> Any:
        called.append(data)
        return data

    async with open_app(app):
        await serving(app)
        replies = await trio.to_thread.run_sync(
            readme_calls,
            amqp_url,
            [
                (route, None, gzip_json("a bare string")),  # not {"data": ...}
                (route, None, gzip_json({"data": 1, "extra": 2})),
                (route, None, b"not gzip at all"),
                (small, None, gzip_json({"data": "x" * 100_000})),  # inflates past 1 KiB
                (route, "still serving", None),
            ],
        )
    types = [reply["error"]["type"] if not reply["success"] else None for reply, _ in replies]
    assert types == ["CodecError", "CodecError", "CodecError", "BodyTooLargeError", None]
    assert all(props.type == "error" for _, props in replies[:4])
    assert replies[0][0]["error"]["message"].startswith("CodecError(")
    assert replies[-1][0] == {"success": True, "data": "still serving"}
    assert called == ["still serving"]
    assert await broker.ready(route) == 0 and await broker.ready(small) == 0


async def test_queue_worker_producers_messages_are_consumed(
    make_app: Callable[..., App], broker: Broker, amqp_url: str
) -> None:
    dlq = await broker.queue("aw-dlq")
    queue = await broker.queue("aw-consume", dead_letter_to=dlq)
    app = make_app()
    got: list[Any] = []

    @app.amqp.consume(queue, codec="amqp_worker")
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            got.append(m.json())  # a body amqp_worker would refuse raises here: REJECT

    bodies = [
        gzip_json({"data": {"order": 1}}),
        gzip_json("a test message"),  # amqp_worker's Master rejects non-dicts: so do we
        gzip_json({"data": [1, 2]}),
    ]
    async with open_app(app):
        await serving(app)
        await trio.to_thread.run_sync(queue_worker_publish, amqp_url, queue, bodies)
        await broker.wait_ready(dlq, 1)
        with trio.fail_after(MUST_HAPPEN):
            while len(got) < 2:  # noqa: ASYNC110 - polling
                await trio.sleep(0.01)
    assert got == [{"order": 1}, [1, 2]]
    [dead] = await broker.drain(dlq)
    assert dead.body == bodies[1]  # rejected without requeue, dead-lettered intact
    assert await broker.ready(queue) == 0


async def test_trioworker_speaks_amqp_worker_as_producer_and_caller(
    make_app: Callable[..., App], broker: Broker
) -> None:
    queue = await broker.queue("aw-out")
    route = broker.name("aw-rpc")
    app = make_app()

    @app.amqp.rpc(route, codec="amqp_worker")
    async def echo(data: Any) -> Any:
        if data == "boom":
            raise RuntimeError("boom")
        return {"echo": data}

    async with open_app(app):
        await serving(app)
        await app.amqp.publish({"k": "v"}, routing_key=queue, codec="amqp_worker")
        assert await app.amqp.call(route, [1], codec="amqp_worker") == {"echo": [1]}
        with pytest.raises(RemoteError) as caught:
            await app.amqp.call(route, "boom", codec="amqp_worker")
    assert caught.value.type == "RuntimeError"
    [sent] = await broker.drain(queue)
    assert json.loads(gzip.decompress(sent.body)) == {"data": {"k": "v"}}
    assert sent.properties.content_type == "application/octet-stream"
    assert sent.properties.content_encoding is None
    assert sent.properties.delivery_mode == 2


def test_a_content_type_alone_never_selects_the_amqp_worker_codec() -> None:
    # application/octet-stream is what raw bodies say too: a JSON caller's raw reply must
    # not be gunzipped and unwrapped because amqp_worker's codec is registered.
    assert codec_for("application/octet-stream", None, "json") is get_codec("raw")
    limited = get_codec("amqp_worker").limited(10)
    assert limited.envelope is get_codec("amqp_worker").envelope
