"""The state tables and the method ids they are keyed by.

The tables (``_state``) say when a method may arrive, the handlers (``_receive``,
``_channel_methods``) say what it does; these tests keep the two in step, and the named
method ids in step with pamqp, the reference codec.
"""

from __future__ import annotations

import pytest
from pamqp import commands

from trioworker.amqp.protocol import (
    ChannelState,
    ConnectionState,
    RemoteProtocolError,
    _channel_methods,
    _methods,
    _receive,
    _state,
)

from ._broker import method, open_channel, open_connection

IDS = {name: value for name, value in vars(_methods).items() if name.isupper() and "_" in name}
IDS.pop("BASIC_CLASS")


@pytest.mark.parametrize("name", sorted(IDS))
def test_method_ids_are_pamqps(name: str) -> None:
    cls = commands.INDEX_MAPPING[IDS[name]]
    assert cls.name.replace(".", "").upper() == name.replace("_", "")


def test_every_connection_transition_has_a_handler() -> None:
    listed = {m for row in _state.CONNECTION_TRANSITIONS.values() for m in row}
    assert listed == set(_receive._CONNECTION_ACTIONS)


def test_every_channel_transition_has_a_handler() -> None:
    listed = {m for row in _state.CHANNEL_TRANSITIONS.values() for m in row}
    hot = {_methods.BASIC_DELIVER, _methods.BASIC_ACK, _methods.BASIC_NACK}
    assert listed - hot - {_state.REPLY} == set(_channel_methods._ACTIONS)


def test_every_state_has_a_row() -> None:
    assert set(_state.CONNECTION_TRANSITIONS) == set(ConnectionState)
    assert set(_state.CHANNEL_TRANSITIONS) == set(ChannelState)


@pytest.mark.parametrize(
    "frame",
    [
        commands.Basic.Return(312, "NO_ROUTE", "ex", "rk"),
        commands.Channel.Flow(False),
        commands.Basic.Cancel("ctag"),
        commands.Basic.ConsumeOk("ctag"),
    ],
)
def test_an_opening_channel_accepts_only_open_ok_and_close(frame: object) -> None:
    conn = open_connection()
    number = conn.open_channel()
    with pytest.raises(RemoteProtocolError, match=r"before Channel\.OpenOk") as info:
        conn.receive_data(method(number, frame))
    assert info.value.reply_code == 505


def test_a_reply_nobody_asked_for_is_unexpected() -> None:
    conn = open_connection()
    number = open_channel(conn)
    with pytest.raises(RemoteProtocolError, match=r"unexpected Queue\.DeclareOk") as info:
        conn.receive_data(method(number, commands.Queue.DeclareOk("q", 0, 0)))
    assert info.value.reply_code == 505


def test_connection_close_ok_while_open_is_unexpected() -> None:
    conn = open_connection()
    with pytest.raises(RemoteProtocolError, match="in state open") as info:
        conn.receive_data(method(0, commands.Connection.CloseOk()))
    assert info.value.reply_code == 505
