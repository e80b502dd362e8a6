"""Byte-fixture tests of :class:`AMQPConnection`: the tests play the broker.

Server frames are built with pamqp (the reference codec, see ``_broker.py``) and what the
client queues is parsed back with pamqp, so every assertion is about bytes on the wire.
Time enters only as ``now`` arguments: nothing here sleeps.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp import heartbeat as pamqp_heartbeat

from trioworker.amqp.protocol import (
    AMQPConnection,
    AMQPEvent,
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ChannelState,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionState,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    HeartbeatTimeout,
    LocalProtocolError,
    MethodReceived,
    PropertyDecodeError,
    PublishConfirmed,
    RemoteProtocolError,
    Returned,
    negotiate,
)

from ._broker import (
    MIXED_EVENTS,
    PROTOCOL_HEADER,
    START,
    build,
    content,
    content_body,
    content_header,
    deliver,
    handshake_bytes,
    heartbeat,
    method,
    mixed_connection,
    open_channel,
    open_connection,
    parse_frames,
    sent_methods,
)

HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def only(frames: list[tuple[int, Any]]) -> tuple[int, Any]:
    assert len(frames) == 1, frames
    return frames[0]


def describe(event: AMQPEvent) -> tuple[Any, ...]:
    """A comparable summary of an event, raw properties included."""
    fields: list[tuple[str, Any]] = []
    for cls in type(event).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name == "_properties":
                continue
            value = getattr(event, name)
            if name == "method":
                value = method(0, value)
            fields.append((name, value))
    return (type(event).__name__, *sorted(fields))


# ------------------------------------------------------------------- handshake


def test_initiate_queues_protocol_header() -> None:
    conn = AMQPConnection()
    assert conn.state is ConnectionState.IDLE
    conn.initiate()
    assert conn.pending_output == 8
    assert conn.data_to_send() == b"AMQP\x00\x00\x09\x01" == PROTOCOL_HEADER
    assert conn.state is ConnectionState.AWAIT_START
    assert conn.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        conn.initiate()


def test_start_answered_with_plain_start_ok() -> None:
    conn = AMQPConnection(
        username="user",
        password="pass",
        client_properties={"product": "trioworker", "capabilities": {"basic.nack": True}},
        locale="en_GB",
    )
    conn.initiate()
    conn.data_to_send()
    assert conn.receive_data(method(0, START)) == []
    channel, start_ok = only(sent_methods(conn))
    assert channel == 0
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.mechanism == "PLAIN"
    assert start_ok.response == "\0user\0pass"
    assert start_ok.client_properties == {
        "product": "trioworker",
        "capabilities": {"basic.nack": True},
    }
    assert start_ok.locale == "en_GB"
    assert conn.state is ConnectionState.AWAIT_TUNE
    assert conn.server_properties == START.server_properties


def test_tune_answered_with_negotiated_tune_ok_and_open() -> None:
    conn = AMQPConnection(heartbeat=30, frame_max=65536, channel_max=0, virtual_host="/vh")
    conn.initiate()
    start, _, open_ok = handshake_bytes()
    conn.receive_data(start)
    conn.data_to_send()
    tune = method(0, commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))
    assert conn.receive_data(tune) == []
    (ch1, tune_ok), (ch2, open_) = sent_methods(conn)
    assert (ch1, ch2) == (0, 0)
    assert isinstance(tune_ok, commands.Connection.TuneOk)
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == (2047, 65536, 30)
    assert isinstance(open_, commands.Connection.Open)
    assert open_.virtual_host == "/vh"
    assert conn.state is ConnectionState.AWAIT_OPEN_OK
    (event,) = conn.receive_data(open_ok)
    assert isinstance(event, ConnectionOpened)
    assert (event.channel_max, event.frame_max, event.heartbeat) == (2047, 65536, 30)
    assert event.server_properties == START.server_properties
    assert (conn.channel_max, conn.frame_max, conn.heartbeat) == (2047, 65536, 30)
    assert conn.state is ConnectionState.OPEN


@pytest.mark.parametrize("frame_max", [1, 8, 4095])
def test_tune_with_frame_max_below_the_minimum_is_a_protocol_error(frame_max: int) -> None:
    conn = AMQPConnection()
    conn.initiate()
    start, tune, _ = handshake_bytes(frame_max=frame_max)
    conn.receive_data(start)
    conn.data_to_send()
    with pytest.raises(RemoteProtocolError, match="below the minimum of 4096"):
        conn.receive_data(tune)
    assert not any(isinstance(m, commands.Connection.TuneOk) for _, m in sent_methods(conn))


def test_tune_with_frame_max_at_the_minimum_is_accepted() -> None:
    frame_max = 4096
    conn = AMQPConnection(frame_max=0)
    conn.initiate()
    start, tune, _ = handshake_bytes(frame_max=frame_max)
    conn.receive_data(start)
    conn.data_to_send()
    assert conn.receive_data(tune) == []
    (_, tune_ok), _ = sent_methods(conn)
    assert tune_ok.frame_max == frame_max


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        (None, 0, 0),
        (None, 60, 60),
        (0, 0, 0),
        (0, 60, 60),
        (60, 0, 60),
        (30, 60, 30),
        (60, 30, 30),
        (60, 60, 60),
    ],
)
def test_negotiate_rule_table(client: int | None, server: int, expected: int) -> None:
    assert negotiate(client, server) == expected


@pytest.mark.parametrize(
    ("wanted", "server", "expected"),
    [(None, 60, 60), (0, 60, 60), (10, 0, 10), (10, 60, 10), (120, 60, 60)],
)
def test_heartbeat_negotiated_in_tune_ok(wanted: int | None, server: int, expected: int) -> None:
    conn = open_connection(tune_heartbeat=server, heartbeat=wanted)
    assert conn.heartbeat == expected
    assert conn.heartbeat_tick(0.0) == (None if expected == 0 else pytest.approx(expected / 2))


def test_protocol_header_reply_is_remote_error() -> None:
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    # The header may arrive in pieces: nothing happens until all 8 bytes are there.
    assert conn.receive_data(b"AMQP") == []
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"\x00\x00\x09\x00")


def test_start_without_plain_is_remote_error() -> None:
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    start = build(commands.Connection.Start, mechanisms="AMQPLAIN EXTERNAL", locales="en_US")
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(method(0, start))
    assert info.value.reply_code == 540
    _, close = only(sent_methods(conn))
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 540
    assert conn.state is ConnectionState.ERROR


def test_start_of_another_version_is_remote_error() -> None:
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(method(0, build(commands.Connection.Start, version_minor=8)))


def test_start_with_long_non_ascii_mechanisms_is_remote_error() -> None:
    """The error text names the server's mechanisms; cut to 255 *characters* it can still be
    more than 255 UTF-8 bytes, too long for Connection.Close's reply-text shortstr."""
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    start = build(commands.Connection.Start, mechanisms="ÉCHANGÉ " * 40, locales="en_US")
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(method(0, start))
    _, close = only(sent_methods(conn))
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 540
    assert len(close.reply_text.encode("utf-8")) <= 255


def test_connection_secure_is_remote_error() -> None:
    conn = AMQPConnection()
    conn.initiate()
    start, _, _ = handshake_bytes()
    conn.receive_data(start)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(method(0, commands.Connection.Secure(challenge="x")))


# ------------------------------------------------------------- connection close


def test_close_from_server() -> None:
    conn = open_connection()
    number = open_channel(conn)
    close = commands.Connection.Close(
        reply_code=320, reply_text="CONNECTION_FORCED", class_id=0, method_id=0
    )
    (event,) = conn.receive_data(method(0, close))
    assert isinstance(event, ConnectionClosed)
    assert (event.by_peer, event.reply_code, event.reply_text) == (True, 320, "CONNECTION_FORCED")
    channel, close_ok = only(sent_methods(conn))
    assert channel == 0
    assert isinstance(close_ok, commands.Connection.CloseOk)
    assert conn.state is ConnectionState.CLOSED
    assert conn.channel_state(number) is None
    # Nothing after the close handshake means anything.
    assert conn.receive_data(deliver(number, 1, b"late")) == []


def test_our_close_ignores_frames_until_close_ok() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.close(reply_code=200, reply_text="bye")
    channel, close = only(sent_methods(conn))
    assert channel == 0
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (200, "bye")
    assert conn.state is ConnectionState.CLOSING
    ignored = (
        deliver(number, 1, b"in flight")
        + method(0, commands.Connection.Blocked("memory"))
        + method(number, commands.Basic.Cancel("ctag"))
        + heartbeat()
    )
    assert conn.receive_data(ignored) == []
    assert conn.data_to_send() == b""  # not even the CancelOk: the channel is going away
    (event,) = conn.receive_data(method(0, commands.Connection.CloseOk()))
    assert isinstance(event, ConnectionClosed)
    assert event.by_peer is False
    assert conn.state is ConnectionState.CLOSED
    conn.close()  # idempotent
    assert conn.data_to_send() == b""


def test_access_refused_during_handshake() -> None:
    conn = AMQPConnection(username="user", password="wrong")
    conn.initiate()
    start, _, _ = handshake_bytes()
    conn.receive_data(start)
    conn.data_to_send()
    refused = commands.Connection.Close(403, "ACCESS_REFUSED - Login was refused", 0, 0)
    (event,) = conn.receive_data(method(0, refused))
    assert isinstance(event, ConnectionClosed)
    assert (event.by_peer, event.reply_code) == (True, 403)
    _, close_ok = only(sent_methods(conn))
    assert isinstance(close_ok, commands.Connection.CloseOk)
    assert conn.state is ConnectionState.CLOSED


def test_close_ok_without_close_is_remote_error() -> None:
    conn = open_connection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(method(0, commands.Connection.CloseOk()))


# --------------------------------------------------------------------- channels


def test_channel_open() -> None:
    conn = open_connection()
    number = conn.open_channel()
    assert number == 1
    assert conn.channel_state(1) is ChannelState.OPENING
    channel, open_ = only(sent_methods(conn))
    assert channel == 1
    assert isinstance(open_, commands.Channel.Open)
    (event,) = conn.receive_data(method(1, commands.Channel.OpenOk()))
    assert isinstance(event, ChannelOpened)
    assert event.channel == 1
    assert conn.channel_state(1) is ChannelState.OPEN
    assert conn.open_channel() == 2


def test_channel_number_validation() -> None:
    conn = open_connection(tune_channel_max=3)
    assert conn.channel_max == 3
    with pytest.raises(LocalProtocolError):
        conn.open_channel(4)
    with pytest.raises(LocalProtocolError):
        conn.open_channel(0)
    assert conn.open_channel(3) == 3
    with pytest.raises(LocalProtocolError):
        conn.open_channel(3)
    assert [conn.open_channel(), conn.open_channel()] == [1, 2]
    with pytest.raises(LocalProtocolError):
        conn.open_channel()


def test_channel_close_from_server() -> None:
    conn = open_connection()
    number = open_channel(conn)
    close = commands.Channel.Close(
        reply_code=404, reply_text="NOT_FOUND - no queue 'q'", class_id=50, method_id=10
    )
    (event,) = conn.receive_data(method(number, close))
    assert isinstance(event, ChannelClosed)
    assert event.channel == number
    assert event.by_peer is True
    assert (event.reply_code, event.reply_text) == (404, "NOT_FOUND - no queue 'q'")
    assert (event.class_id, event.method_id) == (50, 10)
    channel, close_ok = only(sent_methods(conn))
    assert channel == number
    assert isinstance(close_ok, commands.Channel.CloseOk)
    assert conn.channel_state(number) is None
    # The number is free, but quarantined: another is taken while one is left.
    assert conn.open_channel() == number + 1


def test_a_number_closed_by_the_broker_is_reused_only_when_no_other_is_free() -> None:
    conn = open_connection(tune_channel_max=2)
    first = open_channel(conn)
    close = commands.Channel.Close(406, "PRECONDITION_FAILED", class_id=60, method_id=80)
    conn.receive_data(method(first, close))
    assert conn.open_channel() == 2
    assert conn.open_channel() == first  # nothing else is free
    with pytest.raises(LocalProtocolError):
        conn.open_channel()


def test_our_channel_close_drops_frames_until_close_ok() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.close_channel(number, 200, "done")
    channel, close = only(sent_methods(conn))
    assert channel == number
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.reply_text) == (200, "done")
    assert conn.channel_state(number) is ChannelState.CLOSING
    with pytest.raises(LocalProtocolError):
        conn.publish(number, "", "rk", b"x")
    with pytest.raises(LocalProtocolError):
        conn.close_channel(number)
    # A delivery already on the wire, and a second one split across frames.
    in_flight = deliver(number, 7, b"dropped") + deliver(number, 8, b"a" * 30, chunk=10)
    in_flight += method(number, commands.Basic.Ack(1))
    assert conn.receive_data(in_flight) == []
    assert conn.data_to_send() == b""
    # The number stays taken until CloseOk.
    other = conn.open_channel()
    assert other != number
    (event,) = conn.receive_data(method(number, commands.Channel.CloseOk()))
    assert isinstance(event, ChannelClosed)
    assert (event.channel, event.by_peer) == (number, False)
    assert conn.channel_state(number) is None
    assert conn.open_channel() == number


def test_frames_after_the_brokers_channel_close_are_discarded() -> None:
    """RabbitMQ keeps sending deliveries already on their way after its Channel.Close."""
    conn = open_connection()
    number = open_channel(conn)
    close = commands.Channel.Close(406, "PRECONDITION_FAILED", class_id=60, method_id=80)
    (event,) = conn.receive_data(method(number, close))
    assert isinstance(event, ChannelClosed)
    conn.data_to_send()
    stray = deliver(number, 7, b"late") + deliver(number, 8, b"b" * 30, chunk=10)
    stray += method(number, commands.Basic.Ack(1))
    assert conn.receive_data(stray) == []
    # A new channel takes another number: strays may come for a long time.
    assert conn.open_channel() == number + 1
    assert conn.receive_data(deliver(number, 9, b"later")) == []
    assert conn.receive_data(method(number + 1, commands.Channel.OpenOk()))
    # Reopened explicitly: stray frames of the old incarnation may still precede the OpenOk.
    assert conn.open_channel(number) == number
    assert conn.receive_data(deliver(number, 9, b"older") + content_body(number, b"x")) == []
    (opened,) = conn.receive_data(method(number, commands.Channel.OpenOk()))
    assert isinstance(opened, ChannelOpened)
    # Open again: the same frames are a protocol error, as on any open channel.
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(content_body(number, b"x"))


def test_frames_before_open_ok_on_a_fresh_number_are_a_remote_error() -> None:
    conn = open_connection()
    number = conn.open_channel()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(deliver(number, 1, b"x"))
    assert info.value.reply_code == 505


def test_channel_close_crossing_ours() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.close_channel(number)
    conn.data_to_send()
    close = commands.Channel.Close(406, "PRECONDITION_FAILED", class_id=0, method_id=0)
    (event,) = conn.receive_data(method(number, close))
    assert isinstance(event, ChannelClosed)
    assert (event.by_peer, event.reply_code) == (True, 406)
    _, close_ok = only(sent_methods(conn))
    assert isinstance(close_ok, commands.Channel.CloseOk)
    # The broker's CloseOk for our Close then arrives on a freed number: harmless.
    assert conn.receive_data(method(number, commands.Channel.CloseOk())) == []


def test_frame_on_unopened_channel_is_remote_error() -> None:
    conn = open_connection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(deliver(9, 1, b"x"))
    assert info.value.reply_code == 504


# ------------------------------------------------------------------ send_method


def test_send_method_one_synchronous_request_at_a_time() -> None:
    conn = open_connection()
    number = open_channel(conn)
    assert conn.send_method(number, commands.Queue.Declare(queue="q1")) is True
    with pytest.raises(LocalProtocolError):
        conn.send_method(number, commands.Queue.Declare(queue="q2"))
    # Only the first request went out.
    channel, declare = only(sent_methods(conn))
    assert (channel, declare.queue) == (number, "q1")
    (event,) = conn.receive_data(method(number, commands.Queue.DeclareOk("q1", 5, 1)))
    assert isinstance(event, MethodReceived)
    assert event.channel == number
    assert isinstance(event.method, commands.Queue.DeclareOk)
    assert (event.method.queue, event.method.message_count) == ("q1", 5)
    # The reply freed the channel for the next request.
    assert conn.send_method(number, commands.Basic.Qos(prefetch_count=10)) is True
    (event,) = conn.receive_data(method(number, commands.Basic.QosOk()))
    assert isinstance(event.method, commands.Basic.QosOk)


def test_send_method_nowait_expects_no_reply() -> None:
    conn = open_connection()
    number = open_channel(conn)
    assert conn.send_method(number, commands.Queue.Declare(queue="q", nowait=True)) is False
    assert (
        conn.send_method(number, commands.Queue.Bind(queue="q", exchange="x", nowait=True)) is False
    )
    assert conn.send_method(number, commands.Basic.Consume(queue="q")) is True
    frames = sent_methods(conn)
    assert [type(f) for _, f in frames] == [
        commands.Queue.Declare,
        commands.Queue.Bind,
        commands.Basic.Consume,
    ]


def test_send_method_forbidden_and_unopened() -> None:
    conn = open_connection()
    number = open_channel(conn)
    with pytest.raises(LocalProtocolError):
        conn.send_method(number, commands.Channel.Close())
    with pytest.raises(LocalProtocolError):
        conn.send_method(number, commands.Basic.Publish())
    with pytest.raises(LocalProtocolError):
        conn.send_method(number + 1, commands.Basic.Qos())
    assert conn.data_to_send() == b""


def test_unexpected_reply_is_remote_error() -> None:
    conn = open_connection()
    number = open_channel(conn)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(method(number, commands.Queue.DeclareOk("q", 0, 0)))
    assert info.value.reply_code == 505


# ------------------------------------------------------------ content assembly


def test_delivery_assembled_from_several_body_frames() -> None:
    conn = open_connection()
    number = open_channel(conn)
    props = commands.Basic.Properties(content_type="text/plain", headers={"k": "v"})
    data = bytes(range(256)) * 4
    stream = deliver(
        number,
        42,
        data,
        consumer_tag="c1",
        exchange="amq.topic",
        routing_key="a.b",
        redelivered=True,
        properties=props,
        chunk=100,
    )
    (event,) = conn.receive_data(stream)
    assert isinstance(event, Delivery)
    assert (event.channel, event.consumer_tag, event.delivery_tag) == (number, "c1", 42)
    assert (event.exchange, event.routing_key, event.redelivered) == ("amq.topic", "a.b", True)
    assert event.body == data
    assert type(event.body) is bytes
    assert event.message_count is None
    assert event.raw_properties == props.marshal()
    assert event.properties.content_type == "text/plain"
    assert event.properties.headers == {"k": "v"}


def test_delivery_frames_of_two_channels_interleaved() -> None:
    conn = open_connection()
    one, two = open_channel(conn), open_channel(conn)
    frames = [
        method(one, commands.Basic.Deliver("c1", 1, False, "", "q1")),
        method(two, commands.Basic.Deliver("c2", 1, False, "", "q2")),
        content_header(two, 6),
        content_header(one, 4),
        content_body(one, b"on"),
        content_body(two, b"tw"),
        content_body(two, b"o-tw"),
        content_body(one, b"e!"),
    ]
    events = conn.receive_data(b"".join(frames))
    assert [(e.channel, e.consumer_tag, e.body) for e in events] == [
        (two, "c2", b"two-tw"),
        (one, "c1", b"one!"),
    ]


def test_zero_size_body_needs_only_the_header() -> None:
    conn = open_connection()
    number = open_channel(conn)
    stream = method(number, commands.Basic.Deliver("c", 1, False, "", "q")) + content_header(
        number, 0
    )
    (event,) = conn.receive_data(stream)
    assert isinstance(event, Delivery)
    assert event.body == b""
    assert event.raw_properties == b"\x00\x00"
    # The next message starts cleanly.
    (event,) = conn.receive_data(deliver(number, 2, b"next"))
    assert (event.delivery_tag, event.body) == (2, b"next")


def test_body_larger_than_announced_is_remote_error() -> None:
    conn = open_connection()
    number = open_channel(conn)
    stream = (
        method(number, commands.Basic.Deliver("c", 1, False, "", "q"))
        + content_header(number, 3)
        + content_body(number, b"four")
    )
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(stream)


def test_method_interrupting_content_is_remote_error() -> None:
    conn = open_connection()
    number = open_channel(conn)
    stream = method(number, commands.Basic.Deliver("c", 1, False, "", "q")) + deliver(number, 2)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(stream)


def test_confirm_interrupting_content_is_remote_error() -> None:
    """Basic.Ack is decoded on a fast path; it must still respect content framing."""
    conn, number = published(1)
    stream = method(number, commands.Basic.Deliver("c", 1, False, "", "q")) + method(
        number, commands.Basic.Ack(1, False)
    )
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(stream)
    assert info.value.reply_code == 505


def test_get_ok_and_get_empty() -> None:
    conn = open_connection()
    number = open_channel(conn)
    assert conn.send_method(number, commands.Basic.Get(queue="q")) is True
    get_ok = commands.Basic.GetOk(
        delivery_tag=3, redelivered=True, exchange="ex", routing_key="rk", message_count=17
    )
    stream = method(number, get_ok) + content(number, b"got it", chunk=2)
    (event,) = conn.receive_data(stream)
    assert isinstance(event, Delivery)
    assert (event.consumer_tag, event.delivery_tag, event.redelivered) == (None, 3, True)
    assert (event.exchange, event.routing_key, event.message_count) == ("ex", "rk", 17)
    assert event.body == b"got it"
    assert conn.send_method(number, commands.Basic.Get(queue="q")) is True
    (event,) = conn.receive_data(method(number, commands.Basic.GetEmpty()))
    assert isinstance(event, MethodReceived)
    assert isinstance(event.method, commands.Basic.GetEmpty)


# ---------------------------------------------------------- publisher confirms


def confirm_frames(number: int, *acks: tuple[str, int, bool]) -> bytes:
    out = []
    for kind, tag, multiple in acks:
        command = commands.Basic.Ack if kind == "ack" else commands.Basic.Nack
        out.append(method(number, command(tag, multiple)))
    return b"".join(out)


def confirmed(events: list[AMQPEvent]) -> list[tuple[list[int], bool]]:
    assert all(isinstance(e, PublishConfirmed) for e in events), events
    return [(e.delivery_tags, e.ack) for e in events if isinstance(e, PublishConfirmed)]


def test_confirm_select_then_publish_tags() -> None:
    conn = open_connection()
    number = open_channel(conn)
    assert conn.publish(number, "", "q", b"before confirm mode") == 0
    assert conn.send_method(number, commands.Confirm.Select()) is True
    (event,) = conn.receive_data(method(number, commands.Confirm.SelectOk()))
    assert isinstance(event, MethodReceived)
    assert conn.is_confirm_mode(number)
    assert [conn.publish(number, "", "q", b"m") for _ in range(5)] == [1, 2, 3, 4, 5]
    assert conn.unconfirmed(number) == 5


def published(n: int) -> tuple[AMQPConnection, int]:
    conn = open_connection()
    number = open_channel(conn, confirm=True)
    for _ in range(n):
        conn.publish(number, "", "q", b"m")
    conn.data_to_send()
    return conn, number


def test_confirm_single_acks() -> None:
    conn, number = published(3)
    events = conn.receive_data(confirm_frames(number, ("ack", 1, False), ("ack", 2, False)))
    assert confirmed(events) == [([1], True), ([2], True)]
    assert conn.unconfirmed(number) == 1


def test_confirm_multiple_ack_pops_every_tag_up_to_it() -> None:
    conn, number = published(6)
    events = conn.receive_data(confirm_frames(number, ("ack", 4, True)))
    assert confirmed(events) == [([1, 2, 3, 4], True)]
    events = conn.receive_data(confirm_frames(number, ("ack", 6, True)))
    assert confirmed(events) == [([5, 6], True)]
    assert conn.unconfirmed(number) == 0


def test_confirm_multiple_with_tag_zero_means_all() -> None:
    conn, number = published(4)
    conn.receive_data(confirm_frames(number, ("ack", 2, False)))
    events = conn.receive_data(confirm_frames(number, ("ack", 0, True)))
    assert confirmed(events) == [([1, 3, 4], True)]
    assert conn.unconfirmed(number) == 0


def test_confirm_nack() -> None:
    conn, number = published(3)
    events = conn.receive_data(confirm_frames(number, ("nack", 1, False), ("nack", 3, True)))
    assert confirmed(events) == [([1], False), ([2, 3], False)]


def test_confirm_out_of_order_single_acks() -> None:
    conn, number = published(4)
    events = conn.receive_data(
        confirm_frames(number, ("ack", 3, False), ("ack", 1, False), ("ack", 4, True))
    )
    assert confirmed(events) == [([3], True), ([1], True), ([2, 4], True)]


@pytest.mark.parametrize("tag", [0, 4, 99])
def test_confirm_for_unknown_tag_is_remote_error(tag: int) -> None:
    conn, number = published(3)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(confirm_frames(number, ("ack", tag, False)))


def test_confirm_already_confirmed_tag_is_remote_error() -> None:
    conn, number = published(3)
    conn.receive_data(confirm_frames(number, ("ack", 2, False)))
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(confirm_frames(number, ("nack", 2, False)))


def test_confirm_outside_confirm_mode_is_remote_error() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.publish(number, "", "q", b"m")
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(confirm_frames(number, ("ack", 1, False)))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.data())
def test_confirms_resolve_every_tag_exactly_once(count: int, data: st.DataObject) -> None:
    """Any mix of single, multiple and "all" (tag 0) confirms a broker may send: every tag
    is reported once, in ascending order within an event, with the ack/nack it was sent."""
    conn, number = published(count)
    outstanding = list(range(1, count + 1))
    expected: dict[int, bool] = {}
    reported: dict[int, bool] = {}
    while outstanding:
        ack = data.draw(st.booleans())
        kind = data.draw(st.sampled_from(["single", "multiple", "all"]))
        if kind == "single":
            tag = data.draw(st.sampled_from(outstanding))
            done = [tag]
        elif kind == "multiple":
            tag = data.draw(st.integers(1, count))
            done = [t for t in outstanding if t <= tag]
        else:
            tag = 0
            done = list(outstanding)
        outstanding = [t for t in outstanding if t not in done]
        expected.update(dict.fromkeys(done, ack))
        command = commands.Basic.Ack if ack else commands.Basic.Nack
        events = conn.receive_data(method(number, command(tag, kind != "single")))
        for event in events:
            assert isinstance(event, PublishConfirmed)
            assert event.delivery_tags == sorted(event.delivery_tags)
            for t in event.delivery_tags:
                assert t not in reported
                reported[t] = event.ack
        assert conn.unconfirmed(number) == len(outstanding)
    assert reported == expected


def test_return_in_confirm_mode_carries_the_publish_tag() -> None:
    conn, number = published(2)  # tags 1, 2: not mandatory
    assert conn.publish(number, "ex", "nowhere", b"lost", mandatory=True) == 3
    assert conn.publish(number, "ex", "somewhere", b"ok", mandatory=True) == 4
    assert conn.publish(number, "ex", "nowhere", b"lost too", mandatory=True) == 5
    returned = commands.Basic.Return(
        reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key="nowhere"
    )
    stream = (
        confirm_frames(number, ("ack", 2, True))
        + method(number, returned)
        + content(number, b"lost", commands.Basic.Properties(message_id="m3"))
        + confirm_frames(number, ("ack", 4, True))
        + method(number, returned)
        + content(number, b"lost too")
        + confirm_frames(number, ("ack", 5, False))
    )
    events = conn.receive_data(stream)
    returns = [e for e in events if isinstance(e, Returned)]
    assert [(r.delivery_tag, r.body) for r in returns] == [(3, b"lost"), (5, b"lost too")]
    first = returns[0]
    assert (first.reply_code, first.reply_text) == (312, "NO_ROUTE")
    assert (first.exchange, first.routing_key, first.channel) == ("ex", "nowhere", number)
    assert first.properties.message_id == "m3"
    assert [type(e).__name__ for e in events] == [
        "PublishConfirmed",
        "Returned",
        "PublishConfirmed",
        "Returned",
        "PublishConfirmed",
    ]


def test_return_outside_confirm_mode_has_no_tag() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.publish(number, "", "nowhere", b"x", mandatory=True)
    returned = commands.Basic.Return(312, "NO_ROUTE", "", "nowhere")
    (event,) = conn.receive_data(method(number, returned) + content(number, b"x"))
    assert isinstance(event, Returned)
    assert event.delivery_tag is None
    assert event.body == b"x"


# ------------------------------------------------- broker-initiated methods


@pytest.mark.parametrize("nowait", [False, True])
def test_broker_cancel(nowait: bool) -> None:
    conn = open_connection()
    number = open_channel(conn)
    (event,) = conn.receive_data(method(number, commands.Basic.Cancel("ctag-1", nowait=nowait)))
    assert isinstance(event, ConsumerCancelled)
    assert (event.channel, event.consumer_tag) == (number, "ctag-1")
    frames = sent_methods(conn)
    if nowait:
        assert frames == []
    else:
        channel, cancel_ok = only(frames)
        assert channel == number
        assert isinstance(cancel_ok, commands.Basic.CancelOk)
        assert cancel_ok.consumer_tag == "ctag-1"


def test_connection_blocked_and_unblocked() -> None:
    conn = open_connection()
    (event,) = conn.receive_data(method(0, commands.Connection.Blocked("low on memory")))
    assert isinstance(event, ConnectionBlocked)
    assert event.reason == "low on memory"
    assert conn.blocked
    (event,) = conn.receive_data(method(0, commands.Connection.Unblocked()))
    assert isinstance(event, ConnectionUnblocked)
    assert not conn.blocked
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("active", [False, True])
def test_channel_flow_answered(active: bool) -> None:
    conn = open_connection()
    number = open_channel(conn)
    (event,) = conn.receive_data(method(number, commands.Channel.Flow(active)))
    assert isinstance(event, ChannelFlow)
    assert (event.channel, event.active) == (number, active)
    channel, flow_ok = only(sent_methods(conn))
    assert channel == number
    assert isinstance(flow_ok, commands.Channel.FlowOk)
    assert flow_ok.active is active


# ------------------------------------------------------------------ heartbeats


def test_heartbeat_sent_after_half_an_interval_of_our_silence() -> None:
    conn = open_connection(tune_heartbeat=10)  # handshake at now=0
    assert conn.heartbeat == 10
    assert conn.heartbeat_tick(4.9) is not None
    assert conn.data_to_send() == b""
    conn.heartbeat_tick(5.0)
    sent = conn.data_to_send(now=5.0)
    assert sent == HEARTBEAT_FRAME
    assert isinstance(only(parse_frames(sent))[1], pamqp_heartbeat.Heartbeat)
    conn.heartbeat_tick(9.0)
    assert conn.data_to_send() == b""
    # Anything we send counts: a publish written at 9 pushes the next heartbeat to 14.
    number = open_channel(conn)
    conn.publish(number, "", "q", b"m")
    conn.data_to_send(now=9.0)
    conn.heartbeat_tick(13.9)
    assert conn.data_to_send() == b""
    conn.heartbeat_tick(14.0)
    assert conn.data_to_send() == HEARTBEAT_FRAME
    assert conn.channel_state(number) is ChannelState.OPEN


def test_heartbeat_timeout_after_two_intervals_of_peer_silence() -> None:
    conn = open_connection(tune_heartbeat=10)
    conn.heartbeat_tick(20.0)  # exactly two intervals: still alive
    conn.receive_data(heartbeat(), now=15.0)  # the peer spoke at 15
    conn.heartbeat_tick(35.0)
    conn.data_to_send()
    with pytest.raises(HeartbeatTimeout) as info:
        conn.heartbeat_tick(35.1)
    assert isinstance(info.value, RemoteProtocolError)
    # Sticky: every later call raises the same error, and the broker is told why.
    with pytest.raises(HeartbeatTimeout) as again:
        conn.receive_data(heartbeat(), now=36.0)
    assert again.value is info.value
    with pytest.raises(HeartbeatTimeout):
        conn.heartbeat_tick(36.0)
    _, close = only(sent_methods(conn))
    assert isinstance(close, commands.Connection.Close)
    assert conn.state is ConnectionState.ERROR


def test_heartbeat_tick_next_deadline() -> None:
    conn = open_connection(tune_heartbeat=10)
    assert conn.heartbeat_tick(1.0) == pytest.approx(6.0)
    assert conn.heartbeat_tick(19.0) == pytest.approx(20.001)


def test_heartbeat_off() -> None:
    conn = open_connection(tune_heartbeat=0)
    assert conn.heartbeat == 0
    assert conn.heartbeat_tick(1e9) is None
    assert conn.data_to_send() == b""


# ---------------------------------------------------------------- publishing


def test_publish_splits_body_at_frame_max_minus_8() -> None:
    conn = open_connection(tune_frame_max=4096)
    assert conn.frame_max == 4096
    number = open_channel(conn)
    data = bytes(range(256)) * 40  # 10240 bytes
    props = commands.Basic.Properties(content_type="application/octet-stream", delivery_mode=2)
    assert conn.publish(number, "ex", "rk", data, props, mandatory=True) == 0
    raw = conn.data_to_send()
    frames = parse_frames(raw)
    assert all(channel == number for channel, _ in frames)
    publish, header, *bodies = (f for _, f in frames)
    assert isinstance(publish, commands.Basic.Publish)
    assert (publish.exchange, publish.routing_key, publish.mandatory) == ("ex", "rk", True)
    assert header.body_size == len(data)
    assert header.properties.content_type == "application/octet-stream"
    assert header.properties.delivery_mode == 2
    assert [len(b.value) for b in bodies] == [4088, 4088, 2064]
    assert b"".join(b.value for b in bodies) == data
    # No frame on the wire is larger than frame_max.
    pos = 0
    while pos < len(raw):
        size = struct.unpack_from(">I", raw, pos + 3)[0]
        assert size + 8 <= 4096
        pos += size + 8


@pytest.mark.parametrize("size", [0, 1, 4088, 4089])
def test_publish_body_frame_count(size: int) -> None:
    conn = open_connection(tune_frame_max=4096)
    number = open_channel(conn)
    conn.publish(number, "", "q", b"x" * size)
    frames = sent_methods(conn)
    assert len(frames) == 2 + -(-size // 4088)


def test_publish_on_closed_channel_is_local_error() -> None:
    conn = open_connection()
    with pytest.raises(LocalProtocolError):
        conn.publish(1, "", "q", b"never opened")
    number = open_channel(conn)
    conn.receive_data(method(number, commands.Channel.Close(404, "NOT_FOUND", 0, 0)))
    conn.data_to_send()
    with pytest.raises(LocalProtocolError):
        conn.publish(number, "", "q", b"closed by the broker")
    assert conn.data_to_send() == b""
    assert conn.state is ConnectionState.OPEN  # a local error leaves the connection usable


def test_publish_overlong_routing_key_is_local_error() -> None:
    conn = open_connection()
    number = open_channel(conn)
    with pytest.raises(LocalProtocolError):
        conn.publish(number, "", "k" * 256, b"x")
    assert conn.data_to_send() == b""
    assert conn.publish(number, "", "k" * 255, b"x") == 0


def test_pending_output_counts_queued_bytes() -> None:
    conn = open_connection(tune_frame_max=4096)
    number = open_channel(conn)
    for size in (0, 10, 4088, 10000):
        conn.publish(number, "", "q", b"x" * size)
        assert conn.pending_output == len(conn.data_to_send()), size


def test_acks_nacks_rejects_on_the_wire() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.basic_ack(number, 5, multiple=True)
    conn.basic_nack(number, 6, multiple=False, requeue=False)
    conn.basic_reject(number, 7, requeue=True)
    ack, nack, reject = (f for _, f in sent_methods(conn))
    assert (ack.delivery_tag, ack.multiple) == (5, True)
    assert (nack.delivery_tag, nack.multiple, nack.requeue) == (6, False, False)
    assert (reject.delivery_tag, reject.requeue) == (7, True)


# ---------------------------------------------------------- lazy properties


def pre_1970_header(channel: int, body_size: int) -> bytes:
    """A content header whose only property is a timestamp before 1970 (pamqp cannot
    encode one, so the bytes are written by hand)."""
    payload = struct.pack(">HHQH", 60, 0, body_size, 0x0040) + (0xFFFFFFFFFFFFFF00).to_bytes(
        8, "big"
    )
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


def test_bad_property_fails_one_message_only() -> None:
    conn = open_connection()
    number = open_channel(conn)
    stream = (
        method(number, commands.Basic.Deliver("c", 1, False, "", "q"))
        + pre_1970_header(number, 5)
        + content_body(number, b"hello")
        + deliver(number, 2, b"fine", properties=commands.Basic.Properties(message_id="ok"))
    )
    bad, good = conn.receive_data(stream)
    assert isinstance(bad, Delivery)
    assert (bad.delivery_tag, bad.body) == (1, b"hello")
    with pytest.raises(PropertyDecodeError):
        bad.properties  # noqa: B018
    with pytest.raises(ValueError):  # PropertyDecodeError is also a ValueError
        bad.properties  # noqa: B018
    assert good.properties.message_id == "ok"
    assert conn.state is ConnectionState.OPEN
    (later,) = conn.receive_data(deliver(number, 3, b"later"))
    assert later.properties.message_id is None
    assert later.body == b"later"


# ------------------------------------------------------------ partial reads


def test_mixed_stream_all_at_once() -> None:
    conn, frames = mixed_connection()
    events = conn.receive_data(b"".join(frames))
    assert [type(e).__name__ for e in events] == MIXED_EVENTS
    assert [(e.delivery_tag, e.body) for e in events if isinstance(e, Delivery)] == [
        (1, b'{"n": 1}'),
        (2, b"z" * 50),
        (1, b"interleaved!"),
        (2, b""),
    ]


def test_one_byte_at_a_time_equals_all_at_once() -> None:
    whole, frames = mixed_connection()
    stream = b"".join(frames)
    expected = [describe(e) for e in whole.receive_data(stream)]
    sent = whole.data_to_send()
    conn, _ = mixed_connection()
    events = []
    for i in range(len(stream)):
        events.extend(conn.receive_data(stream[i : i + 1]))
    assert [describe(e) for e in events] == expected
    assert conn.data_to_send() == sent


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_split_points_give_the_same_events(data: st.DataObject) -> None:
    whole, frames = mixed_connection()
    stream = b"".join(frames)
    expected = [describe(e) for e in whole.receive_data(stream)]
    sent = whole.data_to_send()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=30)))
    conn, _ = mixed_connection()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        chunk = stream[start:end]
        events.extend(conn.receive_data(bytearray(chunk) if start % 2 else chunk))
    assert [describe(e) for e in events] == expected
    assert conn.data_to_send() == sent
