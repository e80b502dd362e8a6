"""Play the broker for the sans-IO core: server frames built with pamqp, the reference codec.

Nothing here uses trioworker's own encoders, so a test that feeds these bytes checks the core
against pamqp, not against itself.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from pamqp import body as pamqp_body
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp import heartbeat as pamqp_heartbeat

from trioworker.amqp.protocol import AMQPConnection, ChannelOpened, ConnectionOpened

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def build(cls: type[Any], **fields: Any) -> Any:
    """A pamqp command with ``fields`` set after construction.

    pamqp validates some fields more strictly than the wire format, in the constructor and
    again in ``marshal()`` (exchange names must match a pattern, ``delivery_mode`` must be
    1 or 2); the wire carries any shortstr or octet, so the reference frame is built with
    validation turned off for this instance.
    """
    value = cls()
    value.validate = lambda: None
    for name, field in fields.items():
        setattr(value, name, field)
    return value


def method(channel: int, value: Any) -> bytes:
    """One method frame, marshalled by pamqp."""
    return pamqp_frame.marshal(value, channel)


def content_header(
    channel: int, body_size: int, properties: commands.Basic.Properties | None = None
) -> bytes:
    return pamqp_frame.marshal(pamqp_header.ContentHeader(0, body_size, properties), channel)


def content_body(channel: int, data: bytes) -> bytes:
    return pamqp_frame.marshal(pamqp_body.ContentBody(data), channel)


def heartbeat() -> bytes:
    return pamqp_frame.marshal(pamqp_heartbeat.Heartbeat(), 0)


def content(
    channel: int,
    data: bytes,
    properties: commands.Basic.Properties | None = None,
    *,
    chunk: int | None = None,
) -> bytes:
    """Header + body frames for ``data``; bodies split every ``chunk`` bytes if given."""
    out = [content_header(channel, len(data), properties)]
    step = chunk or len(data) or 1
    out.extend(content_body(channel, data[i : i + step]) for i in range(0, len(data), step))
    return b"".join(out)


def deliver(
    channel: int,
    delivery_tag: int,
    data: bytes = b"",
    *,
    consumer_tag: str = "ctag",
    exchange: str = "ex",
    routing_key: str = "rk",
    redelivered: bool = False,
    properties: commands.Basic.Properties | None = None,
    chunk: int | None = None,
) -> bytes:
    """A complete delivery: Basic.Deliver + content header + body frames."""
    deliver = build(
        commands.Basic.Deliver,
        consumer_tag=consumer_tag,
        delivery_tag=delivery_tag,
        redelivered=redelivered,
        exchange=exchange,
        routing_key=routing_key,
    )
    return method(channel, deliver) + content(channel, data, properties, chunk=chunk)


def parse_frames(data: bytes) -> list[tuple[int, Any]]:
    """Split bytes the client queued into ``(channel, pamqp frame)`` pairs."""
    frames = []
    while data:
        consumed, channel, value = pamqp_frame.unmarshal(data)
        frames.append((channel, value))
        data = data[consumed:]
    return frames


def sent_methods(conn: AMQPConnection) -> list[tuple[int, Any]]:
    """Take everything the client queued, parsed (fails if it is not valid frames)."""
    return parse_frames(conn.data_to_send())


START = commands.Connection.Start(
    version_major=0,
    version_minor=9,
    server_properties={"product": "RabbitMQ", "version": "3.13.0"},
    mechanisms="AMQPLAIN PLAIN",
    locales="en_US",
)


def handshake_bytes(
    *, channel_max: int = 2047, frame_max: int = 131072, heartbeat: int = 0
) -> tuple[bytes, bytes, bytes]:
    """The broker's three handshake frames: Start, Tune, OpenOk."""
    return (
        method(0, START),
        method(0, commands.Connection.Tune(channel_max, frame_max, heartbeat)),
        method(0, commands.Connection.OpenOk()),
    )


def open_connection(
    *,
    tune_channel_max: int = 2047,
    tune_frame_max: int = 131072,
    tune_heartbeat: int = 0,
    **kwargs: Any,
) -> AMQPConnection:
    """A connection past the handshake at ``now=0``, with nothing left queued.

    ``tune_*`` are what the broker proposes in ``Connection.Tune``; ``kwargs`` go to
    :class:`AMQPConnection` (what the client would like).
    """
    conn = AMQPConnection(**kwargs)
    conn.initiate()
    events = []
    tune = {
        "channel_max": tune_channel_max,
        "frame_max": tune_frame_max,
        "heartbeat": tune_heartbeat,
    }
    for data in handshake_bytes(**tune):
        events.extend(conn.receive_data(data, now=0.0))
    assert [type(e) for e in events] == [ConnectionOpened]
    conn.data_to_send(now=0.0)
    return conn


def open_channel(conn: AMQPConnection, *, confirm: bool = False) -> int:
    """Open a channel (and put it in confirm mode if asked), with nothing left queued."""
    number = conn.open_channel()
    events = conn.receive_data(method(number, commands.Channel.OpenOk()))
    assert [type(e) for e in events] == [ChannelOpened]
    if confirm:
        assert conn.send_method(number, commands.Confirm.Select())
        conn.receive_data(method(number, commands.Confirm.SelectOk()))
        assert conn.is_confirm_mode(number)
    conn.data_to_send()
    return number


def mixed_frames(one: int, two: int, closing: int) -> list[bytes]:
    """A valid broker frame stream touching most of the core, one frame per item.

    Expects ``one`` open in confirm mode with 3 publishes outstanding, ``two`` open, and
    ``closing`` closed by us (``Channel.Close`` sent, ``CloseOk`` not yet received).
    """
    props = commands.Basic.Properties(content_type="application/json", headers={"a": [1, "b"]})
    return [
        *split_frames(deliver(one, 1, b'{"n": 1}', properties=props)),
        method(two, commands.Basic.Deliver("c2", 1, False, "", "q2")),
        heartbeat(),
        *split_frames(deliver(closing, 9, b"dropped", chunk=3)),
        content_header(two, 12),
        *split_frames(deliver(one, 2, b"z" * 50, chunk=7)),
        content_body(two, b"interleaved!"),
        method(0, commands.Connection.Blocked("disk")),
        method(two, commands.Channel.Flow(False)),
        method(one, commands.Basic.Ack(2, True)),
        method(closing, commands.Channel.CloseOk()),
        method(one, commands.Basic.Cancel("c1")),
        method(0, commands.Connection.Unblocked()),
        *split_frames(deliver(two, 2, b"")),
        method(one, commands.Basic.Nack(3, False, True)),
        method(two, commands.Channel.Close(406, "PRECONDITION_FAILED", 60, 40)),
    ]


MIXED_EVENTS = [
    "Delivery",
    "Delivery",
    "Delivery",
    "ConnectionBlocked",
    "ChannelFlow",
    "PublishConfirmed",
    "ChannelClosed",
    "ConsumerCancelled",
    "ConnectionUnblocked",
    "Delivery",
    "PublishConfirmed",
    "ChannelClosed",
]


def split_frames(data: bytes) -> list[bytes]:
    """Cut a byte stream of whole frames into one item per frame."""
    frames = []
    while data:
        size = 8 + int.from_bytes(data[3:7], "big")
        frames.append(data[:size])
        data = data[size:]
    return frames


def mixed_connection(**kwargs: Any) -> tuple[AMQPConnection, list[bytes]]:
    """An open connection in the state :func:`mixed_frames` expects, and those frames."""
    conn = open_connection(**kwargs)
    one = open_channel(conn, confirm=True)
    two = open_channel(conn)
    closing = open_channel(conn)
    for _ in range(3):
        conn.publish(one, "", "q", b"m")
    conn.close_channel(closing)
    conn.data_to_send()
    return conn, mixed_frames(one, two, closing)


class Hang(BaseException):
    """Raised by :func:`time_limit`. A ``BaseException``, so that no ``except Exception``
    in the code under test can turn it into a protocol error and hide the hang."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with :class:`Hang` if the block runs longer than ``seconds`` (main thread only)."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
