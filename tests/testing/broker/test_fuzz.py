"""Whatever a client sends, the broker answers or closes that connection: it never raises.

The sans-IO connection is fed a handshake and then generated traffic — valid methods with
arbitrary fields in arbitrary order, content frames where they do not belong, and raw
garbage — and must neither raise nor stop accepting other connections.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body, commands, frame, header

from trioworker.testing._broker._connection import ServerConnection
from trioworker.testing._broker._vhost import VHost

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

names = st.sampled_from(["", "q", "r", "amq.x", "amq.rabbitmq.reply-to", "e", "amq.topic"])
keys = st.sampled_from(["", "q", "a.b", "#", "*"])
small = st.integers(0, 5)
arguments = st.dictionaries(
    st.sampled_from(
        [
            "x-message-ttl",
            "x-max-length",
            "x-dead-letter-exchange",
            "x-overflow",
            "x-expires",
            "x-queue-type",
            "x-match",
            "x-delivery-limit",
            "x-single-active-consumer",
            "k",
        ]
    ),
    st.one_of(
        st.integers(-2, 3),
        st.sampled_from(["", "e", "quorum", "reject-publish", "all"]),
        st.booleans(),
    ),
    max_size=3,
)
methods = st.one_of(
    st.builds(
        commands.Queue.Declare,
        queue=names,
        passive=st.booleans(),
        durable=st.booleans(),
        exclusive=st.booleans(),
        auto_delete=st.booleans(),
        arguments=arguments,
    ),
    st.builds(
        commands.Queue.Bind, queue=names, exchange=names, routing_key=keys, arguments=arguments
    ),
    st.builds(commands.Queue.Unbind, queue=names, exchange=names, routing_key=keys),
    st.builds(commands.Queue.Purge, queue=names),
    st.builds(commands.Queue.Delete, queue=names, if_unused=st.booleans(), if_empty=st.booleans()),
    st.builds(
        commands.Exchange.Declare,
        exchange=names,
        exchange_type=st.sampled_from(["direct", "topic", "fanout", "headers", "x-nope"]),
        passive=st.booleans(),
        auto_delete=st.booleans(),
        internal=st.booleans(),
    ),
    st.builds(commands.Exchange.Delete, exchange=names, if_unused=st.booleans()),
    st.builds(commands.Basic.Qos, prefetch_count=small, global_=st.booleans()),
    st.builds(
        commands.Basic.Consume,
        queue=names,
        consumer_tag=st.sampled_from(["", "t"]),
        no_ack=st.booleans(),
        exclusive=st.booleans(),
    ),
    st.builds(commands.Basic.Cancel, consumer_tag=st.sampled_from(["", "t"])),
    st.builds(commands.Basic.Get, queue=names, no_ack=st.booleans()),
    st.builds(commands.Basic.Ack, delivery_tag=small, multiple=st.booleans()),
    st.builds(
        commands.Basic.Nack, delivery_tag=small, multiple=st.booleans(), requeue=st.booleans()
    ),
    st.builds(commands.Basic.Reject, delivery_tag=small, requeue=st.booleans()),
    st.builds(commands.Basic.Recover, requeue=st.booleans()),
    st.builds(commands.Confirm.Select),
    st.builds(commands.Channel.Flow, active=st.booleans()),
    st.just(commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)),
    st.builds(commands.Channel.CloseOk),
    st.builds(commands.Channel.Open),
    st.builds(commands.Tx.Select),
    st.just(commands.Basic.Deliver("t", 1, False, "", "q")),
)
props = st.builds(
    commands.Basic.Properties,
    expiration=st.sampled_from([None, "0", "5", "-1", "x"]),
    reply_to=st.sampled_from([None, "amq.rabbitmq.reply-to", "q"]),
    headers=st.one_of(st.none(), st.just({"CC": ["r"], "BCC": ["q"]}), st.just({"k": 1})),
    user_id=st.sampled_from([None, "guest", "bob"]),
)


@st.composite
def publishes(draw: Any) -> bytes:
    data = draw(st.binary(max_size=300))
    method = commands.Basic.Publish(
        exchange=draw(names), routing_key=draw(keys), mandatory=draw(st.booleans())
    )
    channel = draw(st.sampled_from([1, 1, 2, 3]))
    chunks = frame.marshal(method, channel)
    chunks += frame.marshal(header.ContentHeader(0, len(data), draw(props)), channel)
    if data:
        chunks += frame.marshal(body.ContentBody(data), channel)
    return chunks


on_channel = st.sampled_from([1, 1, 1, 1, 2, 2, 2, 0, 3])  # mostly open channels
method_frames = st.tuples(on_channel, methods).map(lambda cm: frame.marshal(cm[1], cm[0]))
traffic = st.lists(
    # Mostly well-formed requests, sometimes garbage (which ends the connection).
    st.one_of(method_frames, method_frames, method_frames, publishes(), st.binary(max_size=40)),
    max_size=40,
)


def _connection(vhost: VHost) -> ServerConnection:
    return ServerConnection(
        users={"guest": "guest"},
        vhosts={"/": vhost}.get,
        server_properties={},
        frame_max=131072,
        channel_max=8,
        heartbeat=0,
        max_message_size=200,
        record=lambda content: None,
    )


def _handshake(conn: ServerConnection) -> None:
    start_ok = commands.Connection.StartOk(
        client_properties={"capabilities": {"consumer_cancel_notify": True}},
        mechanism="PLAIN",
        response="\0guest\0guest",
        locale="en_US",
    )
    conn.receive_data(PROTOCOL_HEADER + frame.marshal(start_ok, 0))
    tune_ok = commands.Connection.TuneOk(channel_max=8, frame_max=131072, heartbeat=0)
    conn.receive_data(
        frame.marshal(tune_ok, 0)
        + frame.marshal(commands.Connection.Open(virtual_host="/"), 0)
        + frame.marshal(commands.Channel.Open(), 1)
        + frame.marshal(commands.Channel.Open(), 2)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic, st.integers(1, 64))
def test_no_client_traffic_makes_the_broker_raise(chunks: list[bytes], cut: int) -> None:
    vhost = VHost("/", clock=lambda: 0.0, wall_clock=lambda: 0.0, schedule=lambda at: None)
    first, second = _connection(vhost), _connection(vhost)
    _handshake(first)
    _handshake(second)
    stream = b"".join(chunks)
    for start in range(0, len(stream), cut):  # cut anywhere: frames span reads
        first.receive_data(stream[start : start + cut])
        second.receive_data(stream[start : start + cut][::-1])
    first.data_to_send()
    first.lost()
    second.lost()
    vhost.expire_due(1e9)
    third = _connection(vhost)
    _handshake(third)  # still serving
    assert third.state.value == "opened"
