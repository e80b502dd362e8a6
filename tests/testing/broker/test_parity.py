"""The same requests against the real RabbitMQ and the memory broker give the same
answers: every case here runs on both and compares the reply code and text (the broker
fixture's RabbitMQ is 3.10, whose texts the memory broker reproduces)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from trioworker.amqp import AMQPError, BasicProperties, Channel, connect
from trioworker.testing import MemoryBroker

pytestmark = pytest.mark.broker

Case = Callable[[Channel, str, str], Awaitable[Any]]
CASES: dict[str, tuple[Case, tuple[str, ...], tuple[str, ...]]] = {}


def case(name: str, queues: tuple[str, ...] = (), exchanges: tuple[str, ...] = ()) -> Any:
    """Register a case: ``fn(channel, prefix, url)``; the suffixed queues and exchanges it
    may create are deleted afterwards."""

    def register(fn: Case) -> Case:
        CASES[name] = (fn, queues, exchanges)
        return fn

    return register


async def _redeclare(ch: Channel, name: str, first: dict[str, Any], second: dict[str, Any]) -> None:
    await ch.queue_declare(name, **first)
    await ch.queue_declare(name, **second)


@case("passive declare of a missing queue")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "missing", passive=True)


@case("durable differs", queues=("d",))
async def _(ch: Channel, p: str, url: str) -> None:
    await _redeclare(ch, p + "d", {"durable": True}, {"durable": False})


@case("an argument differs", queues=("t",))
async def _(ch: Channel, p: str, url: str) -> None:
    await _redeclare(
        ch, p + "t", {"arguments": {"x-message-ttl": 1000}}, {"arguments": {"x-message-ttl": 2000}}
    )


@case("an argument goes missing", queues=("t2",))
async def _(ch: Channel, p: str, url: str) -> None:
    await _redeclare(ch, p + "t2", {"arguments": {"x-message-ttl": 1000}}, {})


@case("the queue type differs", queues=("qt",))
async def _(ch: Channel, p: str, url: str) -> None:
    await _redeclare(
        ch, p + "qt", {"durable": True}, {"durable": True, "arguments": {"x-queue-type": "quorum"}}
    )


@case("exclusive differs", queues=("er",))
async def _(ch: Channel, p: str, url: str) -> None:
    await _redeclare(ch, p + "er", {"exclusive": True}, {"exclusive": False})


@case("a classic queue with a quorum argument", queues=("cq",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "cq", arguments={"x-delivery-limit": 5})


@case("a non-durable quorum queue", queues=("qn",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "qn", arguments={"x-queue-type": "quorum"})


@case("a quorum queue with a classic argument", queues=("qc",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(
        p + "qc", durable=True, arguments={"x-queue-type": "quorum", "x-queue-mode": "default"}
    )


@case("a negative TTL", queues=("tn",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "tn", arguments={"x-message-ttl": -1})


@case("a string max length", queues=("ml",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "ml", arguments={"x-max-length": "ten"})


@case("a routing key without an exchange", queues=("dl",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "dl", arguments={"x-dead-letter-routing-key": "x"})


@case("an unknown overflow", queues=("ov",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "ov", arguments={"x-overflow": "bogus"})


@case("a reserved queue name")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare("amq." + p)


@case("a reserved exchange name")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.exchange_declare("amq." + p, "direct")


@case("an unknown exchange type (connection error)")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.exchange_declare(p + "ut", "x-delayed-message")


@case("the exchange type differs", exchanges=("ex",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.exchange_declare(p + "ex", "direct")
    await ch.exchange_declare(p + "ex", "topic")


@case("deleting a system exchange")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.exchange_delete("amq.direct")


@case("binding to a missing exchange", queues=("bq",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "bq")
    await ch.queue_bind(p + "bq", p + "nope", "k")


@case("binding to the default exchange", queues=("bd",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "bd")
    await ch.queue_bind(p + "bd", "", "k")


@case("publishing to a missing exchange")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.confirm_select()
    await ch.basic_publish(b"x", exchange=p + "nope", routing_key="k")


@case("publishing to an internal exchange", exchanges=("int",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.exchange_declare(p + "int", "fanout", internal=True)
    await ch.confirm_select()
    await ch.basic_publish(b"x", exchange=p + "int", routing_key="")


@case("acking twice", queues=("ack",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "ack")
    await ch.confirm_select()
    await ch.basic_publish(b"x", routing_key=p + "ack")
    delivery = await ch.basic_get(p + "ack")
    assert delivery is not None
    ch.basic_ack(delivery.delivery_tag)
    ch.basic_ack(delivery.delivery_tag)
    await ch.wait_closed()


@case("another connection's exclusive queue", queues=("ex1",))
async def _(ch: Channel, p: str, url: str) -> None:
    async with connect(url) as other, other.channel() as och:
        await och.queue_declare(p + "ex1", exclusive=True)
        await ch.basic_consume(p + "ex1")


@case("an exclusive consumer", queues=("ec",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "ec")
    await ch.basic_consume(p + "ec", exclusive=True)
    await ch.basic_consume(p + "ec")


@case("delete if empty", queues=("ie",))
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.queue_declare(p + "ie")
    await ch.confirm_select()
    await ch.basic_publish(b"x", routing_key=p + "ie")
    await ch.queue_delete(p + "ie", if_empty=True)


@case("an invalid expiration")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.confirm_select()
    await ch.basic_publish(b"x", routing_key=p, properties=BasicProperties(expiration="soon"))


@case("a user_id that is not the login")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.confirm_select()
    await ch.basic_publish(b"x", routing_key=p, properties=BasicProperties(user_id="bob"))


@case("reply_to without a reply consumer")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.confirm_select()
    await ch.basic_publish(
        b"x", routing_key=p, properties=BasicProperties(reply_to="amq.rabbitmq.reply-to")
    )


@case("a reply consumer that acks")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.basic_consume("amq.rabbitmq.reply-to")


@case("mandatory and unroutable")
async def _(ch: Channel, p: str, url: str) -> None:
    await ch.confirm_select()
    await ch.basic_publish(b"x", routing_key=p + "nowhere", mandatory=True)


@case("requeued messages go back in their original order", queues=("order",))
async def _(ch: Channel, p: str, url: str) -> list[tuple[bytes, bool]]:
    await ch.confirm_select()
    await ch.queue_declare(p + "order")
    for i in range(6):
        await ch.basic_publish(str(i).encode(), routing_key=p + "order")
    got = [await ch.basic_get(p + "order") for _ in range(5)]
    tags = [d.delivery_tag for d in got if d is not None]
    ch.basic_reject(tags[3], requeue=True)
    ch.basic_nack(tags[1], requeue=True)
    ch.basic_ack(tags[4])
    ch.basic_nack(tags[2], multiple=True, requeue=True)
    await ch.queue_declare(p + "order", passive=True)
    left = []
    while (d := await ch.basic_get(p + "order", no_ack=True)) is not None:
        left.append((d.body, d.redelivered))
    return left


@case("a TTL of 0 still reaches a waiting consumer", queues=("t0",))
async def _(ch: Channel, p: str, url: str) -> list[bytes]:
    await ch.queue_declare(p + "t0", arguments={"x-message-ttl": 0})
    got: list[bytes] = []
    await ch.basic_consume(p + "t0", no_ack=True, on_delivery=lambda d: got.append(d.body))
    await ch.confirm_select()
    await ch.basic_publish(b"now", routing_key=p + "t0")
    await ch.queue_declare(p + "t0", passive=True)
    return got


@case("max length with a consumer at its prefetch", queues=("ml1",))
async def _(ch: Channel, p: str, url: str) -> tuple[list[bytes], int | None]:
    await ch.queue_declare(p + "ml1", arguments={"x-max-length": 1})
    await ch.basic_qos(1)
    got: list[bytes] = []
    await ch.basic_consume(p + "ml1", on_delivery=lambda d: got.append(d.body))
    await ch.confirm_select()
    for i in range(4):
        await ch.basic_publish(str(i).encode(), routing_key=p + "ml1")
    ok = await ch.queue_declare(p + "ml1", passive=True)
    return got, ok.message_count


async def _outcome(url: str, name: str, prefix: str) -> str:
    fn, queues, exchanges = CASES[name]
    try:
        async with connect(url) as conn, conn.channel() as ch:
            value = await fn(ch, prefix, url)
        result = "ok" if value is None else repr(value).replace(prefix, "<p>")
    except AMQPError as error:
        code = getattr(error, "reply_code", None)
        text = getattr(error, "reply_text", str(error))
        result = f"{code} {text}".replace(prefix, "<p>")
    async with connect(url) as conn, conn.channel() as ch:
        for queue in queues:
            await ch.queue_delete(prefix + queue)
        for exchange in exchanges:
            await ch.exchange_delete(prefix + exchange)
    return result


@pytest.mark.parametrize("name", list(CASES))
async def test_the_answer_is_rabbitmqs(
    name: str, amqp_url: str, unique_name: Callable[..., str]
) -> None:
    prefix = unique_name("parity")
    real = await _outcome(amqp_url, name, prefix)
    broker = MemoryBroker()
    async with broker.running():
        memory = await _outcome(broker.url, name, prefix)
    assert memory == real
