"""Queue declarations and RabbitMQ's rules for them: equivalence, exclusivity, lifetimes,
arguments, limits — and 540 for what the memory broker does not implement."""

from __future__ import annotations

import pytest
import trio

from trioworker.amqp import (
    AccessRefusedError,
    ChannelClosedError,
    Connection,
    NotFoundError,
    PreconditionFailedError,
    PublishNackedError,
    ResourceLockedError,
    connect,
)
from trioworker.testing import MemoryBroker


async def test_passive_declare_of_a_missing_queue_is_404(conn: Connection) -> None:
    async with conn.channel() as ch:
        with pytest.raises(NotFoundError) as info:
            await ch.queue_declare("missing", passive=True)
    assert info.value.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert (info.value.class_id, info.value.method_id) == (50, 10)


async def test_declare_ok_counts_messages_and_consumers(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("counted")
        await ch.basic_publish(b"1", routing_key="counted")
        await ch.basic_publish(b"2", routing_key="counted")
        ok = await ch.queue_declare("counted", passive=True)
        assert (ok.queue, ok.message_count, ok.consumer_count) == ("counted", 2, 0)


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        (
            {"durable": True},
            {"durable": False},
            "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current "
            "is 'true'",
        ),
        (
            {"arguments": {"x-message-ttl": 1000}},
            {"arguments": {"x-message-ttl": 2000}},
            "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but "
            "current is '1000'",
        ),
        (
            {"durable": True},
            {"durable": True, "arguments": {"x-queue-type": "quorum"}},
            "inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value "
            "'quorum' of type 'longstr' but current is none",
        ),
    ],
)
async def test_an_inequivalent_redeclare_is_406_with_rabbitmqs_text(
    conn: Connection, first: dict, second: dict, text: str
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("q", **first)
        with pytest.raises(PreconditionFailedError) as info:
            await ch.queue_declare("q", **second)
    assert info.value.reply_text == f"PRECONDITION_FAILED - {text}"


async def test_an_equivalent_redeclare_is_fine_whatever_the_integer_width(conn: Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("w", arguments={"x-max-length": 10, "other": "ignored"})
        await ch.queue_declare("w", arguments={"x-max-length": 10})


async def test_amq_prefixed_names_are_reserved(conn: Connection) -> None:
    async with conn.channel() as ch:
        with pytest.raises(AccessRefusedError, match=r"queue name 'amq\.mine' contains reserved"):
            await ch.queue_declare("amq.mine")
    async with conn.channel() as ch:
        with pytest.raises(AccessRefusedError, match=r"exchange name 'amq\.mine' contains"):
            await ch.exchange_declare("amq.mine", "direct")


async def test_server_named_queues(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        ok = await ch.queue_declare("", exclusive=True)
        assert ok.queue.startswith("amq.gen-") and len(ok.queue) == 30
        assert mbroker.queue(ok.queue).exclusive


async def test_exclusive_queues_belong_to_their_connection(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("mine", exclusive=True)
    async with connect(mbroker.url) as other, other.channel() as ch:
        with pytest.raises(ResourceLockedError, match="RESOURCE_LOCKED - cannot obtain exclusive"):
            await ch.basic_consume("mine")
    assert "mine" in mbroker.queues()
    await conn.close()
    assert "mine" not in mbroker.queues()


async def test_auto_delete_queues_go_with_their_last_consumer(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("transient", auto_delete=True)
        first = await ch.basic_consume("transient")
        second = await ch.basic_consume("transient")
        await ch.basic_cancel(first.consumer_tag)
        assert "transient" in mbroker.queues()
        await ch.basic_cancel(second.consumer_tag)
        assert "transient" not in mbroker.queues()


async def test_delete_if_unused_if_empty_and_purge(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("d")
        await ch.basic_publish(b"1", routing_key="d")
        with pytest.raises(PreconditionFailedError, match=r"queue .d. in vhost ./. not empty"):
            await ch.queue_delete("d", if_empty=True)
    async with conn.channel() as ch:
        consumer = await ch.basic_consume("d", no_ack=True)
        with pytest.raises(PreconditionFailedError, match="queue 'd' in vhost '/' in use"):
            await ch.queue_delete("d", if_unused=True)
        del consumer
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.basic_publish(b"2", routing_key="d")
        await ch.basic_publish(b"3", routing_key="d")
        assert await ch.queue_purge("d") == 2
        await ch.basic_publish(b"4", routing_key="d")
        assert await ch.queue_delete("d") == 1
        assert await ch.queue_delete("d") == 0  # a missing queue: fine, as in RabbitMQ
    assert "d" not in mbroker.queues()


@pytest.mark.parametrize(
    ("arguments", "feature"),
    [
        ({"x-max-priority": 10}, "priority queues (x-max-priority)"),
        ({"x-queue-type": "stream"}, "streams (x-queue-type=stream)"),
        ({"x-queue-mode": "lazy"}, "lazy queues (x-queue-mode=lazy)"),
        ({"x-overflow": "reject-publish-dlx"}, "x-overflow=reject-publish-dlx"),
        ({"x-made-up": 1}, "the queue argument 'x-made-up'"),
    ],
)
async def test_unimplemented_queue_arguments_are_540_naming_them(
    conn: Connection, arguments: dict, feature: str
) -> None:
    durable = arguments.get("x-queue-type") == "stream"
    async with conn.channel() as ch:
        with pytest.raises(ChannelClosedError) as info:
            await ch.queue_declare("nope", durable=durable, arguments=arguments)
    assert info.value.reply_code == 540
    assert info.value.reply_text == f"NOT_IMPLEMENTED - memory broker does not implement {feature}"
    async with conn.channel() as ch:  # only the channel closed
        await ch.queue_declare("fine")


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"durable": False}, "invalid property 'non-durable' for queue 'qq' in vhost '/'"),
        ({"durable": True, "exclusive": True}, "invalid property 'exclusive-owner'"),
        ({"durable": True, "arguments": {"x-message-ttl": -1}}, "{value_negative,-1}"),
        ({"durable": True, "arguments": {"x-expires": 0}}, "{value_zero,0}"),
        (
            {"durable": True, "arguments": {"x-max-length": "ten"}},
            '"expected integer, got longstr"',
        ),
    ],
)
async def test_invalid_declarations_are_406(conn: Connection, kwargs: dict, text: str) -> None:
    arguments = {"x-queue-type": "quorum", **kwargs.pop("arguments", {})}
    async with conn.channel() as ch:
        with pytest.raises(PreconditionFailedError) as info:
            await ch.queue_declare("qq", arguments=arguments, **kwargs)
    assert text in info.value.reply_text


async def test_max_length_drops_the_head(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("short", arguments={"x-max-length": 2})
        for body in (b"1", b"2", b"3", b"4"):
            await ch.basic_publish(body, routing_key="short")
    assert [m.body for m in mbroker.queue("short").messages] == [b"3", b"4"]


async def test_max_length_bytes(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("small", arguments={"x-max-length-bytes": 5})
        for body in (b"123", b"45", b"6"):
            await ch.basic_publish(body, routing_key="small")
    assert [m.body for m in mbroker.queue("small").messages] == [b"45", b"6"]


async def test_reject_publish_overflow_nacks_the_publisher(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare(
            "full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await ch.basic_publish(b"kept", routing_key="full")
        with pytest.raises(PublishNackedError):
            await ch.basic_publish(b"refused", routing_key="full")
        await ch.basic_publish(b"also", routing_key="elsewhere")  # the channel is fine
    assert [m.body for m in mbroker.queue("full").messages] == [b"kept"]


async def test_queue_ttl_expires_messages_without_a_consumer(
    autojump_clock: trio.testing.MockClock, conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("ttl", arguments={"x-message-ttl": 5000})
        await ch.basic_publish(b"old", routing_key="ttl")
        await trio.sleep(3)
        await ch.basic_publish(b"new", routing_key="ttl")
        await trio.sleep(2.5)  # the first is due at 5 s, the timer drops it
        assert [m.body for m in mbroker.queue("ttl").messages] == [b"new"]
        assert mbroker.next_expiry() == pytest.approx(mbroker.now() + 2.5, abs=0.01)
        await trio.sleep(3)
        assert mbroker.queue("ttl").messages == []
        assert mbroker.queue("ttl").expired == 2
        assert mbroker.next_expiry() is None


async def test_fast_forward_skips_a_delay_without_waiting(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("slow", arguments={"x-message-ttl": 60_000})
        await ch.basic_publish(b"m", routing_key="slow")
        started = trio.current_time()
        mbroker.fast_forward(59)
        assert len(mbroker.queue("slow").messages) == 1
        mbroker.fast_forward(1)
        assert mbroker.queue("slow").messages == []
        assert trio.current_time() - started < 5


async def test_per_message_ttl_expires_at_the_head_only(
    conn: Connection, mbroker: MemoryBroker
) -> None:
    from trioworker.amqp import BasicProperties

    async with conn.channel() as ch:
        await ch.confirm_select()
        await ch.queue_declare("heads")
        await ch.basic_publish(
            b"long", routing_key="heads", properties=BasicProperties(expiration="10000")
        )
        await ch.basic_publish(
            b"short", routing_key="heads", properties=BasicProperties(expiration="1000")
        )
        mbroker.fast_forward(2)
        # "short" is due but waits behind "long", as in RabbitMQ.
        assert [m.body for m in mbroker.queue("heads").messages] == [b"long", b"short"]
        mbroker.fast_forward(8)
        assert mbroker.queue("heads").messages == []
        await ch.basic_publish(
            b"now", routing_key="heads", properties=BasicProperties(expiration="0")
        )
        assert mbroker.queue("heads").messages == []  # TTL 0 and no consumer: gone at once
        got: list[bytes] = []
        await ch.basic_consume("heads", no_ack=True, on_delivery=lambda d: got.append(d.body))
        await ch.basic_publish(
            b"taken", routing_key="heads", properties=BasicProperties(expiration="0")
        )
        await ch.queue_declare("heads", passive=True)
        assert got == [b"taken"]  # TTL 0 with a waiting consumer: delivered, as in RabbitMQ
        with pytest.raises(PreconditionFailedError, match="invalid expiration 'soon': no_integer"):
            await ch.basic_publish(
                b"x", routing_key="heads", properties=BasicProperties(expiration="soon")
            )


async def test_unused_queues_expire(conn: Connection, mbroker: MemoryBroker) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("unused", arguments={"x-expires": 30_000})
        consumer = await ch.basic_consume("unused")
        mbroker.fast_forward(60)
        assert "unused" in mbroker.queues()  # it has a consumer
        await ch.basic_cancel(consumer.consumer_tag)
        mbroker.fast_forward(29)
        await ch.queue_declare("unused", arguments={"x-expires": 30_000})  # used again
        mbroker.fast_forward(29)
        assert "unused" in mbroker.queues()
        mbroker.fast_forward(1)
        assert "unused" not in mbroker.queues()
