"""A channel error on a busy consuming channel must cost that channel, not the connection.

RabbitMQ keeps sending the deliveries already on their way after it sent ``Channel.Close``
(observed: 200-250 ``Basic.Deliver`` + content frames behind the Close with a prefetch of
1024). A client must discard frames for a channel it is closing or has just closed; the
framework relies on that (docs/amqp.md: a channel closed by the broker is retried, the
connection and the other routes on it go on).

The fault: ``Basic.Ack`` for a delivery tag the channel never had — RabbitMQ answers with
``Channel.Close(406 PRECONDITION_FAILED "unknown delivery tag")`` while deliveries stream in.
(The same close happens in production when a delivery outlives RabbitMQ's
``consumer_timeout``.)
"""

from __future__ import annotations

import pytest
import trio

from trioworker.amqp import PreconditionFailedError, connect

from ._helpers import declare, fill

pytestmark = pytest.mark.broker


async def test_channel_error_with_deliveries_in_flight_keeps_the_connection(
    amqp_url: str, queues
) -> None:
    queue = queues.new()
    await declare(amqp_url, queue)
    await fill(amqp_url, queue, range(5_000))
    async with connect(amqp_url, connection_name="tw-test-faults-channel-error") as conn:
        channel = await conn.open_channel()
        await channel.basic_qos(prefetch_count=1024)
        consumer = await channel.basic_consume(queue)
        received = 0
        with trio.fail_after(20), pytest.raises(PreconditionFailedError, match="unknown delivery"):
            async for _ in consumer:
                received += 1
                if received == 10:
                    channel.basic_ack(10**9)  # a tag this channel never delivered
        # The connection lives on: reuse it at once, with channel numbers reused too.
        for _ in range(3):
            other = await conn.open_channel()
            reply = await other.queue_declare(queue, passive=True)
            assert reply.queue == queue
            await other.close()
        await trio.sleep(0.5)  # any stray frames still on their way arrive meanwhile
        assert not conn.is_closed, f"the connection died: {conn.error!r}"
