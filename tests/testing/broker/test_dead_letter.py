"""Dead-lettering: where the copies go, and ``x-death`` exactly as RabbitMQ 3.10 builds it
(checked against a real 3.10 while writing these: only the key order of the first death
record differs, as pamqp encodes tables sorted — the decoded dicts are equal)."""

from __future__ import annotations

import datetime

import pytest

from trioworker.amqp import BasicProperties, Channel, Connection
from trioworker.testing import MemoryBroker

DLX = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}


async def _setup(ch: Channel, **queues: dict) -> None:
    await ch.confirm_select()
    await ch.queue_declare("dlq")
    for name, arguments in queues.items():
        await ch.queue_declare(name, arguments=arguments)


def _recent(value: object) -> bool:
    now = datetime.datetime.now(tz=datetime.UTC)
    return isinstance(value, datetime.datetime) and abs((now - value).total_seconds()) < 60


async def test_a_rejected_message_carries_x_death(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await _setup(ch, src=DLX)
        await ch.basic_publish(
            b"m",
            routing_key="src",
            properties=BasicProperties(headers={"mine": 1}, message_id="m1"),
        )
        delivery = await ch.basic_get("src")
        assert delivery is not None
        ch.basic_reject(delivery.delivery_tag, requeue=False)
        await ch.queue_declare("dlq", passive=True)
    [dead] = mbroker.queue("dlq").messages
    headers = dead.headers
    [death] = headers.pop("x-death")
    assert _recent(death.pop("time"))
    assert death == {
        "count": 1,
        "reason": "rejected",
        "queue": "src",
        "exchange": "",
        "routing-keys": ["src"],
    }
    assert headers == {
        "mine": 1,
        "x-first-death-reason": "rejected",
        "x-first-death-queue": "src",
        "x-first-death-exchange": "",
    }
    assert (dead.exchange, dead.routing_key, dead.properties.message_id) == ("", "dlq", "m1")
    assert (mbroker.queue("src").rejected, mbroker.queue("src").dead_lettered) == (1, 1)


async def test_an_expired_message_keeps_its_expiration_in_the_record(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await _setup(ch, delay={**DLX, "x-message-ttl": 60_000})
        await ch.basic_publish(
            b"m", routing_key="delay", properties=BasicProperties(expiration="1500")
        )
        mbroker.fast_forward(1.5)
    [dead] = mbroker.queue("dlq").messages
    assert dead.properties.expiration is None  # removed, or it would expire again
    [death] = dead.headers["x-death"]
    assert (death["reason"], death["queue"], death["original-expiration"]) == (
        "expired",
        "delay",
        "1500",
    )


async def test_repeated_deaths_count_up_and_move_first(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    # The framework's retry loop: main -> delay queue (TTL) -> back to main, twice.
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("main")
        await ch.queue_declare(
            "main.retry",
            arguments={
                "x-message-ttl": 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "main",
            },
        )
        await ch.basic_publish(b"m", routing_key="main.retry")
        mbroker.fast_forward(1)
        first = await ch.basic_get("main", no_ack=True)
        assert first is not None
        await ch.basic_publish(b"m", routing_key="main.retry", properties=first.properties)
        mbroker.fast_forward(1)
        second = await ch.basic_get("main", no_ack=True)
        assert second is not None
    [death] = second.properties.headers["x-death"]
    assert (death["count"], death["reason"], death["queue"]) == (2, "expired", "main.retry")
    assert list(death) == sorted(death)  # a repeated record is re-sorted, as in RabbitMQ


async def test_max_length_dead_letters_the_head_through_an_exchange(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("overflow")
        await ch.queue_bind("overflow", "amq.topic", "capped.#")
        await ch.queue_declare(
            "capped", arguments={"x-max-length": 1, "x-dead-letter-exchange": "amq.topic"}
        )
        await ch.basic_publish(b"1", routing_key="capped")
        await ch.basic_publish(b"2", routing_key="capped")
    [dead] = mbroker.queue("overflow").messages
    assert (dead.body, dead.exchange, dead.routing_key) == (b"1", "amq.topic", "capped")
    assert dead.headers["x-death"][0]["reason"] == "maxlen"


async def test_a_missing_dead_letter_exchange_drops_silently(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await _setup(ch, lonely={"x-dead-letter-exchange": "gone", "x-message-ttl": 10})
        await ch.basic_publish(b"m", routing_key="lonely")
        mbroker.fast_forward(1)
        await ch.queue_declare("lonely", passive=True)  # the channel is fine
    assert mbroker.queue("lonely").messages == []
    assert mbroker.queue("lonely").expired == 1


async def test_a_fully_automatic_cycle_is_dropped(conn: Connection, mbroker: MemoryBroker) -> None:
    loop = {"x-dead-letter-exchange": "", "x-message-ttl": 10}  # back to itself by name
    async with conn.channel() as ch:
        await _setup(ch, loop=loop)
        await ch.basic_publish(b"m", routing_key="loop")
        mbroker.fast_forward(1)
    assert mbroker.queue("loop").messages == []


@pytest.mark.parametrize("requeue", [False, True])
async def test_a_cycle_through_a_rejection_is_not_dropped(
    conn: Connection, mbroker: MemoryBroker, requeue: bool
) -> None:
    async with conn.channel() as ch:
        await _setup(ch, again={"x-dead-letter-exchange": ""})
        await ch.basic_publish(b"m", routing_key="again")
        for _ in range(3):
            delivery = await ch.basic_get("again")
            assert delivery is not None
            ch.basic_reject(delivery.delivery_tag, requeue=requeue)
        await ch.queue_declare("again", passive=True)
    [message] = mbroker.queue("again").messages
    if requeue:
        assert message.redelivered and "x-death" not in message.headers
    else:
        assert message.headers["x-death"][0]["count"] == 3
