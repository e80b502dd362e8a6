"""The maximum message size: a content header announcing a body over ``max_message_size``
closes the connection (506) before a single body byte is buffered (issue 11, item 5)."""

from __future__ import annotations

import pytest
from pamqp import commands

from trioworker.amqp.protocol import (
    AMQPConnection,
    ConnectionState,
    Delivery,
    LocalProtocolError,
    RemoteProtocolError,
)

from ._broker import (
    content_body,
    content_header,
    deliver,
    method,
    open_channel,
    open_connection,
    parse_frames,
)

DEFAULT = 128 * 1024 * 1024


def _deliver_method(channel: int) -> bytes:
    return method(channel, commands.Basic.Deliver("ctag", 1, False, "ex", "rk"))


def test_default_is_rabbitmqs_128_mib() -> None:
    assert AMQPConnection().max_message_size == DEFAULT


def test_announced_2_to_62_bytes_is_refused_at_the_header() -> None:
    conn = open_connection()
    number = open_channel(conn)
    conn.receive_data(_deliver_method(number))
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(content_header(number, 2**62))
    error = info.value
    assert error.reply_code == 506
    assert str(2**62) in str(error) and str(DEFAULT) in str(error)
    assert "max_message_size" in str(error)
    assert conn.state is ConnectionState.ERROR
    # The peer is told why, and every later call re-raises (sticky): body frames that
    # keep coming are never buffered.
    ((channel, close),) = parse_frames(conn.data_to_send())
    assert channel == 0 and isinstance(close, commands.Connection.Close)
    assert close.reply_code == 506
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(content_body(number, b"x" * 4000))
    assert conn._buffer == b""


def test_limit_is_inclusive_and_configurable() -> None:
    conn = open_connection(max_message_size=10)
    number = open_channel(conn)
    events = conn.receive_data(deliver(number, 1, b"0123456789"))
    assert [type(e) for e in events] == [Delivery]
    assert events[0].body == b"0123456789"
    with pytest.raises(RemoteProtocolError, match="11 bytes, over the maximum message size of 10"):
        conn.receive_data(deliver(number, 2, b"0123456789X"))


def test_returned_and_get_ok_content_are_bounded_too() -> None:
    conn = open_connection(max_message_size=100)
    number = open_channel(conn)
    conn.receive_data(method(number, commands.Basic.Return(312, "NO_ROUTE", "ex", "rk")))
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(content_header(number, 101))
    assert info.value.reply_code == 506


def test_max_message_size_must_be_positive() -> None:
    with pytest.raises(LocalProtocolError):
        AMQPConnection(max_message_size=0)
