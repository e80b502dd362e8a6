"""Property tests: whatever bytes the peer sends, the core either makes sense of them or
raises :class:`RemoteProtocolError` — never another exception type, never a hang.

Layering rule 1 of docs/architecture.md: random, truncated and corrupted input must
raise the protocol error; the error is sticky (h11 style) and the peer is told why with a
``Connection.Close`` carrying the reply code.

Each example runs under :func:`time_limit`, whose exception no ``except Exception`` in the
core can swallow, so an infinite loop fails the test instead of stalling the suite.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands

from trioworker.amqp.protocol import (
    AMQPConnection,
    AMQPEvent,
    ConnectionState,
    LocalProtocolError,
    RemoteProtocolError,
)

from ._broker import (
    START,
    Hang,
    heartbeat,
    method,
    mixed_connection,
    open_connection,
    parse_frames,
    time_limit,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Reply codes the core may put in its Connection.Close (spec 1.9 / RabbitMQ errata).
CLOSE_CODES = {501, 502, 503, 504, 505, 506, 540}
#: The frame_max the fuzzed connections negotiate: small, so size limits are reachable.
FRAME_MAX = 4096
EXAMPLE_TIME_LIMIT = 5.0

METHOD_INDEXES = sorted(commands.INDEX_MAPPING)


def feed(conn: AMQPConnection, chunks: list[bytes]) -> RemoteProtocolError | None:
    """Feed ``chunks``; return the protocol error if one was raised (after checking it
    left the connection failed cleanly), else None. Any other exception propagates."""
    with time_limit(EXAMPLE_TIME_LIMIT):
        try:
            for chunk in chunks:
                events = conn.receive_data(chunk)
                assert all(isinstance(e, AMQPEvent) for e in events)
        except RemoteProtocolError as exc:
            assert_failed_cleanly(conn, exc)
            return exc
    return None


def assert_failed_cleanly(conn: AMQPConnection, error: RemoteProtocolError) -> None:
    assert error.reply_code in CLOSE_CODES
    assert conn.state is ConnectionState.ERROR
    # Sticky: the same error, whatever comes next, valid or not.
    for data in (heartbeat(), b"", b"\x00" * 20):
        with pytest.raises(RemoteProtocolError) as again:
            conn.receive_data(data)
        assert again.value is error
    with pytest.raises(RemoteProtocolError) as again:
        conn.open_channel()
    assert again.value is error
    # The peer is told why: the last frame queued is a Connection.Close with the code.
    frames = parse_frames(conn.data_to_send())
    assert frames, "no Connection.Close queued"
    channel, close = frames[-1]
    assert channel == 0
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == error.reply_code
    assert len(close.reply_text.encode("utf-8")) <= 255
    # ... once.
    assert conn.data_to_send() == b""
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"\x01")
    assert conn.data_to_send() == b""


def fuzz_connection() -> tuple[AMQPConnection, list[bytes]]:
    return mixed_connection(tune_frame_max=FRAME_MAX)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


cut_lists = st.lists(st.integers(0, 2000), max_size=8)


@st.composite
def random_frames(draw: st.DrawFn) -> bytes:
    """Frames with a plausible header and random content: reaches past the framing checks
    into the method, header and body handlers."""
    frame_type = draw(st.sampled_from([1, 1, 1, 2, 3, 8]) | st.integers(0, 255))
    channel = draw(st.sampled_from([0, 1, 2, 3, 4]) | st.integers(0, 65535))
    if frame_type == 1 and draw(st.booleans()):
        index = draw(st.sampled_from(METHOD_INDEXES))
        payload = struct.pack(">I", index) + draw(st.binary(max_size=40))
    elif frame_type == 2 and draw(st.booleans()):
        payload = struct.pack(">HHQ", 60, 0, draw(st.integers(0, 100))) + draw(
            st.binary(max_size=30)
        )
    else:
        payload = draw(st.binary(max_size=60))
    end = draw(st.just(0xCE) | st.integers(0, 255))
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


# ---------------------------------------------------------------- after handshake


@FUZZ
@given(st.binary(max_size=400), cut_lists)
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    conn, _ = fuzz_connection()
    feed(conn, chunked(data, cuts))


@FUZZ
@given(st.lists(random_frames(), min_size=1, max_size=6), cut_lists)
def test_random_frames(frames: list[bytes], cuts: list[int]) -> None:
    conn, _ = fuzz_connection()
    feed(conn, chunked(b"".join(frames), cuts))


@FUZZ
@given(st.data(), st.binary(min_size=1, max_size=100), cut_lists)
def test_truncated_stream_then_garbage(
    data: st.DataObject, garbage: bytes, cuts: list[int]
) -> None:
    conn, frames = fuzz_connection()
    stream = b"".join(frames)
    cut = data.draw(st.integers(0, len(stream) - 1))
    feed(conn, chunked(stream[:cut] + garbage, cuts))


@FUZZ
@given(st.data(), st.integers(1, 255), cut_lists)
def test_one_corrupted_byte(data: st.DataObject, flip: int, cuts: list[int]) -> None:
    conn, frames = fuzz_connection()
    stream = bytearray(b"".join(frames))
    position = data.draw(st.integers(0, len(stream) - 1))
    stream[position] ^= flip
    feed(conn, chunked(bytes(stream), cuts))


@FUZZ
@given(st.data(), st.integers(0, 255).filter(lambda b: b != 0xCE), cut_lists)
def test_wrong_end_octet(data: st.DataObject, octet: int, cuts: list[int]) -> None:
    conn, frames = fuzz_connection()
    index = data.draw(st.integers(0, len(frames) - 1))
    bad = frames[index][:-1] + bytes([octet])
    stream = b"".join([*frames[:index], bad, *frames[index + 1 :]])
    error = feed(conn, chunked(stream, cuts))
    assert error is not None
    assert error.reply_code == 501


@FUZZ
@given(
    st.integers(0, 255),
    st.integers(0, 65535),
    st.integers(FRAME_MAX - 7, 2**32 - 1),
    st.booleans(),
)
def test_oversized_frame_refused_from_its_header(
    frame_type: int, channel: int, size: int, mid_stream: bool
) -> None:
    """Only the 7 header bytes arrive: the core must refuse the size at once rather than
    wait (and buffer) for a payload bigger than frame_max."""
    conn, frames = fuzz_connection()
    prefix = frames[0] if mid_stream else b""
    error = feed(conn, [prefix + struct.pack(">BHI", frame_type, channel, size)])
    assert error is not None
    assert error.reply_code == 501


def test_largest_allowed_frame_is_awaited() -> None:
    conn, _ = fuzz_connection()
    assert conn.frame_max == FRAME_MAX
    assert feed(conn, [struct.pack(">BHI", 3, 1, FRAME_MAX - 8)]) is None


def test_frame_max_before_tune_is_our_own() -> None:
    conn = AMQPConnection(frame_max=8192)
    conn.initiate()
    error = feed(conn, [struct.pack(">BHI", 1, 0, 8192 - 7)])
    assert error is not None
    assert error.reply_code == 501


def test_frame_max_below_spec_minimum_is_refused_locally() -> None:
    with pytest.raises(LocalProtocolError):
        AMQPConnection(frame_max=4095)


# ------------------------------------------------------------------ handshake


def handshake_start() -> AMQPConnection:
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    return conn


@FUZZ
@given(st.binary(max_size=300), cut_lists)
def test_random_bytes_instead_of_start(data: bytes, cuts: list[int]) -> None:
    conn = handshake_start()
    with time_limit(EXAMPLE_TIME_LIMIT):
        try:
            for chunk in chunked(data, cuts):
                assert conn.receive_data(chunk) == []
        except RemoteProtocolError as exc:
            assert_failed_cleanly(conn, exc)


@FUZZ
@given(st.lists(random_frames(), min_size=1, max_size=4), st.integers(0, 3), cut_lists)
def test_random_frames_during_handshake(
    frames: list[bytes], valid_steps: int, cuts: list[int]
) -> None:
    """Garbage after 0..3 valid handshake frames (Start, Tune, OpenOk)."""
    conn = handshake_start()
    handshake = [
        method(0, START),
        method(0, commands.Connection.Tune(2047, FRAME_MAX, 60)),
        method(0, commands.Connection.OpenOk()),
    ]
    stream = b"".join(handshake[:valid_steps] + frames)
    feed(conn, chunked(stream, cuts))


@FUZZ
@given(st.data(), st.integers(1, 255))
def test_corrupted_handshake(data: st.DataObject, flip: int) -> None:
    conn = handshake_start()
    stream = bytearray(
        method(0, START)
        + method(0, commands.Connection.Tune(2047, FRAME_MAX, 60))
        + method(0, commands.Connection.OpenOk())
    )
    position = data.draw(st.integers(0, len(stream) - 1))
    stream[position] ^= flip
    feed(conn, [bytes(stream)])


# --------------------------------------------------------- targeted regressions


@pytest.mark.parametrize(
    "frame",
    [
        b"\x01\x00\x00\x00\x00\x00\x00\xce",  # method frame without a method index
        b"\x01\x00\x01\x00\x00\x00\x02\x00\x3c\xce",  # same, on a channel
        b"\x01\x00\x00\x00\x00\x00\x04\xff\xff\xff\xff\xce",  # unknown method index
        b"\x08\x00\x00\x00\x00\x00\x01\x00\xce",  # heartbeat with a payload
        b"\x08\x00\x01\x00\x00\x00\x00\xce",  # heartbeat on a channel
        b"\x02\x00\x00\x00\x00\x00\x00\xce",  # content header on channel 0
        b"\x03\x00\x01\x00\x00\x00\x01x\xce",  # body with no message in progress
        b"\x02\x00\x01\x00\x00\x00\x02\x00\x3c\xce",  # header with no message in progress
        b"\x07\x00\x01\x00\x00\x00\x00\xce",  # unknown frame type
        b"AMQP\x00\x00\x09\x01",  # a protocol header mid-connection
    ],
)
def test_malformed_frame_examples(frame: bytes) -> None:
    conn = open_connection()
    conn.open_channel()
    conn.receive_data(method(1, commands.Channel.OpenOk()))
    conn.data_to_send()
    assert feed(conn, [frame]) is not None


def test_truncated_deliver_arguments() -> None:
    conn = open_connection()
    conn.open_channel()
    conn.receive_data(method(1, commands.Channel.OpenOk()))
    conn.data_to_send()
    payload = struct.pack(">I", 0x003C003C) + b"\x04ctag"  # no delivery tag, no names
    frame = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    error = feed(conn, [frame])
    assert error is not None
    assert error.reply_code == 501


def test_confirm_with_extra_bytes() -> None:
    conn, _ = fuzz_connection()
    payload = struct.pack(">IQB", 0x003C0050, 1, 0) + b"\x00"
    error = feed(conn, [struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"])
    assert error is not None
    assert error.reply_code == 501


def test_error_during_handshake_still_closes() -> None:
    conn = handshake_start()
    error = feed(conn, [method(0, commands.Connection.OpenOk())])  # OpenOk before Start
    assert error is not None
    assert error.reply_code == 505


def test_no_close_queued_when_never_initiated() -> None:
    """Before initiate() we have said nothing: there is nobody to send a Close to."""
    conn = AMQPConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x0a\xce")
    assert conn.data_to_send() == b""
    with pytest.raises(RemoteProtocolError) as again:
        conn.receive_data(b"")
    assert again.value is info.value


def test_time_limit_catches_a_hang() -> None:
    """The watchdog itself works, even through ``except Exception``."""
    with pytest.raises(Hang), time_limit(0.05):
        try:
            while True:
                pass
        except Exception:  # pragma: no cover - must not catch Hang
            pytest.fail("Hang was caught as an Exception")
