"""The frame end octet (0xCE): every frame kind, wherever the reads split it.

The end octet is the only way to tell that a frame's size field and its payload agree. A
wrong one means the frame boundaries are lost, so the core must refuse the frame *before*
acting on it (no event, no reply for it) with a 501 ``FRAME_ERROR``, and tell the broker
why. Each test here names the end octet in its assertion, so removing the check in the
parse loop fails them even where a later check would have raised something else.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands

from trioworker.amqp.protocol import (
    AMQPConnection,
    AMQPEvent,
    ConnectionState,
    Delivery,
    RemoteProtocolError,
)

from ._broker import (
    content_body,
    content_header,
    deliver,
    heartbeat,
    method,
    mixed_connection,
    open_channel,
    open_connection,
    parse_frames,
    split_frames,
)


def with_end(frame: bytes, octet: int) -> bytes:
    return frame[:-1] + bytes([octet])


def assert_end_octet_error(conn: AMQPConnection, error: RemoteProtocolError) -> None:
    assert error.reply_code == 501
    assert "end octet" in str(error)
    assert conn.state is ConnectionState.ERROR
    (channel, close), *rest = parse_frames(conn.data_to_send())
    assert not rest, "nothing but the Close may be queued: the bad frame must not act"
    assert channel == 0
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 501
    with pytest.raises(RemoteProtocolError):  # sticky
        conn.receive_data(heartbeat())


def confirm_connection() -> tuple[AMQPConnection, int]:
    """An open connection with channel 1 in confirm mode and two publishes outstanding."""
    conn = open_connection()
    number = open_channel(conn, confirm=True)
    conn.publish(number, "", "q", b"a")
    conn.publish(number, "", "q", b"b")
    conn.data_to_send()
    return conn, number


def deliver_method(channel: int) -> bytes:
    return split_frames(deliver(channel, 7, b"body"))[0]


#: name -> (frames that set the scene, the frame whose end octet is wrong). Covers each
#: frame type and both method paths (decoded by hand on the hot path, or by pamqp).
CASES: dict[str, tuple[list[bytes], bytes]] = {
    "method on channel 0": ([], method(0, commands.Connection.Blocked("disk"))),
    "heartbeat": ([], heartbeat()),
    "Basic.Deliver (hot path)": ([], deliver_method(1)),
    "Basic.Ack (hot path)": ([], method(1, commands.Basic.Ack(1, False))),
    "Basic.Nack (hot path)": ([], method(1, commands.Basic.Nack(2, True, False))),
    "Basic.Cancel (pamqp)": ([], method(1, commands.Basic.Cancel("ctag"))),
    "Channel.Flow (pamqp)": ([], method(1, commands.Channel.Flow(False))),
    "content header": ([deliver_method(1)], content_header(1, 4)),
    "empty content header": ([deliver_method(1)], content_header(1, 0)),
    "content body": ([deliver_method(1), content_header(1, 4)], content_body(1, b"body")),
    "last of two bodies": (
        [deliver_method(1), content_header(1, 4), content_body(1, b"bo")],
        content_body(1, b"dy"),
    ),
}


def play(conn: AMQPConnection, scene: list[bytes]) -> None:
    for frame in scene:
        conn.receive_data(frame)
    conn.data_to_send()


@pytest.mark.parametrize("octet", [0x00, 0xCD, 0xCF, 0xFF, ord("A")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_end_octet_is_a_frame_error(case: str, octet: int) -> None:
    conn, _ = confirm_connection()
    scene, frame = CASES[case]
    play(conn, scene)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(with_end(frame, octet))
    assert_end_octet_error(conn, info.value)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(CASES)), st.integers(0, 255).filter(lambda b: b != 0xCE), st.data())
def test_wrong_end_octet_split_across_reads(case: str, octet: int, data: st.DataObject) -> None:
    """However the reads cut the bad frame, the parts before its end octet produce nothing
    and the read that brings the end octet raises."""
    conn, _ = confirm_connection()
    scene, frame = CASES[case]
    play(conn, scene)
    bad = with_end(frame, octet)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(bad) - 1), max_size=4)))
    parts = [bad[a:b] for a, b in zip([0, *cuts], [*cuts, len(bad)], strict=True)]
    for part in parts[:-1]:
        assert conn.receive_data(part) == []
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(parts[-1])
    assert_end_octet_error(conn, info.value)


def test_end_octet_arriving_alone() -> None:
    conn, _ = confirm_connection()
    frame = method(1, commands.Basic.Ack(1, False))
    assert conn.receive_data(frame[:-1]) == []
    assert conn.unconfirmed(1) == 2  # nothing acted on yet
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"\x00")
    assert_end_octet_error(conn, info.value)
    assert conn.unconfirmed(1) == 2


def test_size_field_shorter_than_the_payload() -> None:
    """A body frame announcing 3 bytes but carrying 4: the octet where the end should be is
    a payload byte. Without the check the core would take 3 bytes and lose the framing."""
    conn, _ = confirm_connection()
    play(conn, [deliver_method(1), content_header(1, 3)])
    frame = b"\x03\x00\x01\x00\x00\x00\x03" + b"abcd" + b"\xce"
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(frame)
    assert_end_octet_error(conn, info.value)


def test_size_field_longer_than_the_payload() -> None:
    """The end octet is looked for where the size says, not at the first 0xCE."""
    conn, _ = confirm_connection()
    play(conn, [deliver_method(1), content_header(1, 4)])
    frame = b"\x03\x00\x01\x00\x00\x00\x04" + b"abc" + b"\xce" + b"\x01"
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(frame)
    assert_end_octet_error(conn, info.value)


def test_payload_full_of_end_octets_is_fine() -> None:
    conn = open_connection()
    open_channel(conn)
    body = b"\xce" * 50
    (event,) = conn.receive_data(deliver(1, 0xCECE, body, chunk=7))
    assert isinstance(event, Delivery)
    assert event.body == body


def events_of(conn: AMQPConnection, frames: list[bytes]) -> list[AMQPEvent]:
    events: list[AMQPEvent] = []
    for frame in frames:
        events.extend(conn.receive_data(frame))
    return events


def summary(events: list[AMQPEvent]) -> list[tuple[str, Any]]:
    return [(type(e).__name__, getattr(e, "channel", None)) for e in events]


@settings(max_examples=100, deadline=None)
@given(st.data(), st.integers(0, 255).filter(lambda b: b != 0xCE))
def test_the_check_fires_at_the_bad_frame_of_a_mixed_stream(
    data: st.DataObject, octet: int
) -> None:
    """In a stream touching every part of the core, the frames before the bad one produce
    exactly their events, and the bad frame raises (rather than a later one)."""
    reference, frames = mixed_connection()
    index = data.draw(st.integers(0, len(frames) - 1))
    expected = summary(events_of(reference, frames[:index]))
    conn, frames = mixed_connection()
    assert summary(events_of(conn, frames[:index])) == expected
    conn.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(with_end(frames[index], octet))
    assert_end_octet_error(conn, info.value)
