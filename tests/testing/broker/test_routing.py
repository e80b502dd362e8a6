"""Routing per exchange type, exactly as RabbitMQ routes (topic against a reference)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioworker.amqp import (
    AccessRefusedError,
    BasicProperties,
    Channel,
    Connection,
    MessageReturnedError,
    NotFoundError,
    PreconditionFailedError,
)
from trioworker.testing import MemoryBroker
from trioworker.testing._broker._matching import split_words, topic_matches


async def _bound_queues(ch: Channel, exchange: str, kind: str, keys: dict[str, Any]) -> None:
    await ch.exchange_declare(exchange, kind)
    for queue, key in keys.items():
        await ch.queue_declare(queue)
        args = key if isinstance(key, dict) else {}
        await ch.queue_bind(queue, exchange, "" if isinstance(key, dict) else key, args)


def _bodies(broker: MemoryBroker, queue: str) -> list[bytes]:
    return [m.body for m in broker.queue(queue).messages]


async def test_default_exchange_routes_by_queue_name(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("named")
        await ch.basic_publish(b"x", routing_key="named")
        await ch.basic_publish(b"lost", routing_key="no-such-queue")
    assert _bodies(mbroker, "named") == [b"x"]
    assert [m.routing_key for m in mbroker.published] == ["named", "no-such-queue"]


async def test_direct_and_fanout(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await _bound_queues(ch, "d", "direct", {"d1": "a", "d2": "b"})
        await ch.queue_bind("d2", "d", "a")  # d2 twice over: one copy
        await _bound_queues(ch, "f", "fanout", {"f1": "ignored", "f2": ""})
        await ch.basic_publish(b"1", exchange="d", routing_key="a")
        await ch.basic_publish(b"2", exchange="d", routing_key="b")
        await ch.basic_publish(b"3", exchange="f", routing_key="whatever")
        await ch.queue_unbind("d2", "d", "a")
        await ch.basic_publish(b"4", exchange="d", routing_key="a")
    assert _bodies(mbroker, "d1") == [b"1", b"4"]
    assert _bodies(mbroker, "d2") == [b"1", b"2"]
    assert _bodies(mbroker, "f1") == _bodies(mbroker, "f2") == [b"3"]


@pytest.mark.parametrize(
    ("binding", "key", "matches"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#", "", True),
        ("*", "", False),
        ("", "", True),
        ("*", ".", False),
        ("*.*", ".", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("#.#", "x", True),
        ("a.", "a.", True),
        ("a.", "a", False),
        ("*.b.#", "x.b", True),
    ],
)
async def test_topic_exchange(
    conn: Connection, mbroker: MemoryBroker, binding: str, key: str, matches: bool
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await _bound_queues(ch, "t", "topic", {"tq": binding})
        await ch.basic_publish(b"m", exchange="t", routing_key=key)
    assert _bodies(mbroker, "tq") == ([b"m"] if matches else [])


def _reference_topic(pattern: list[str], words: list[str]) -> bool:
    """A plain recursive reading of RabbitMQ's rule, to check the set-based one."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_reference_topic(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _reference_topic(rest, words[1:])


words = st.lists(st.sampled_from(["a", "b", "", "*", "#"]), max_size=6)


@given(words, st.lists(st.sampled_from(["a", "b", ""]), max_size=6))
def test_topic_matching_agrees_with_the_reference(pattern: list[str], key: list[str]) -> None:
    binding = ".".join(pattern)
    routing_key = ".".join(key)
    assert topic_matches(split_words(binding), split_words(routing_key)) == _reference_topic(
        list(split_words(binding)), list(split_words(routing_key))
    )


async def test_headers_exchange(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await _bound_queues(
            ch,
            "h",
            "headers",
            {
                "all": {"x-match": "all", "kind": "order", "n": 1},
                "any": {"x-match": "any", "kind": "order", "n": 2},
                "default-all": {"kind": "order"},
                "presence": {"flag": None},
                "with-x": {"x-match": "any-with-x", "x-tenant": "t1"},
                "without-x": {"x-match": "any", "x-tenant": "t1"},
            },
        )

        async def publish(body: bytes, headers: dict[str, Any] | None) -> None:
            await ch.basic_publish(
                body, exchange="h", routing_key="", properties=BasicProperties(headers=headers)
            )

        await publish(b"1", {"kind": "order", "n": 1})
        await publish(b"2", {"kind": "order", "n": 2})
        await publish(b"3", {"n": 2, "flag": "anything"})
        await publish(b"4", {"x-tenant": "t1"})
        await publish(b"5", None)
        await publish(b"6", {"kind": "order", "n": "1"})  # a string is not the number 1
    assert _bodies(mbroker, "all") == [b"1"]
    assert _bodies(mbroker, "any") == [b"1", b"2", b"3", b"6"]
    assert _bodies(mbroker, "default-all") == [b"1", b"2", b"6"]
    assert _bodies(mbroker, "presence") == [b"3"]
    assert _bodies(mbroker, "with-x") == [b"4"]
    assert _bodies(mbroker, "without-x") == []


async def test_cc_and_bcc_add_routing_keys_and_bcc_is_removed(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await _bound_queues(ch, "sel", "direct", {"main": "k", "cc": "k-cc", "bcc": "k-bcc"})
        await ch.basic_publish(
            b"m",
            exchange="sel",
            routing_key="k",
            properties=BasicProperties(headers={"CC": ["k-cc"], "BCC": ["k-bcc"], "x": 1}),
        )
    for queue in ("main", "cc", "bcc"):
        [message] = mbroker.queue(queue).messages
        assert message.headers == {"CC": ["k-cc"], "x": 1}


async def test_mandatory_publish_without_a_route_is_returned(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        with pytest.raises(MessageReturnedError) as info:
            await ch.basic_publish(b"m", routing_key="nowhere", mandatory=True)
        assert (info.value.reply_code, info.value.reply_text) == (312, "NO_ROUTE")


async def test_returns_without_confirms_reach_on_return(conn: Connection) -> None:
    returned = []
    async with conn.channel() as ch:
        ch.on_return = returned.append
        await ch.publish(b"m", routing_key="nowhere", mandatory=True)
        await ch.queue_declare("sync")  # a round trip: the return came before its reply
    assert [(r.reply_code, r.routing_key, r.body) for r in returned] == [(312, "nowhere", b"m")]


async def test_publish_to_a_missing_exchange_closes_the_channel_with_404(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        with pytest.raises(NotFoundError, match="NOT_FOUND - no exchange 'nope' in vhost '/'"):
            await ch.basic_publish(b"m", exchange="nope", routing_key="k")
        assert ch.is_closed
    async with conn.channel() as ch:  # the connection is fine
        await ch.queue_declare("after")
    assert mbroker.published == []  # refused: not a publish the broker took


async def test_internal_exchanges_refuse_publishes(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.exchange_declare("inner", "fanout", internal=True)
        await ch.confirm_select()
        with pytest.raises(AccessRefusedError, match="cannot publish to internal exchange"):
            await ch.basic_publish(b"m", exchange="inner", routing_key="")


async def test_predeclared_exchanges(mbroker: MemoryBroker, conn: Connection) -> None:
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} <= set(
        mbroker.exchange_names()
    )
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("via-amq-topic")
        await ch.queue_bind("via-amq-topic", "amq.topic", "a.#")
        await ch.basic_publish(b"m", exchange="amq.topic", routing_key="a.b")
        await ch.exchange_declare("amq.topic", "topic", durable=False, passive=True)
    assert _bodies(mbroker, "via-amq-topic") == [b"m"]


async def test_properties_reach_the_consumer_as_published(conn: Connection) -> None:
    props = BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"a": 1, "b": "two", "c": [1, "x"], "d": {"nested": True}},
        delivery_mode=2,
        priority=3,
        correlation_id="corr",
        reply_to="replies",
        expiration="60000",
        message_id="id-1",
        timestamp=None,
        message_type="order.created",
        user_id="guest",
        app_id="tests",
    )
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("props")
        await ch.basic_publish(b"body", routing_key="props", properties=props)
        delivery = await ch.basic_get("props", no_ack=True)
    assert delivery is not None
    assert delivery.properties == props
    assert delivery.body == b"body"


async def test_a_user_id_other_than_the_login_is_refused(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        with pytest.raises(PreconditionFailedError, match="user_id property set to 'someone-else'"):
            await ch.basic_publish(
                b"m", routing_key="x", properties=BasicProperties(user_id="someone-else")
            )
        assert ch.is_closed
