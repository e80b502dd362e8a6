"""The connection handshake and channel 0, on the broker's side (RabbitMQ's sequence).

Protocol header (anything else is answered with the version we speak, and a hang-up:
spec 4.2.2) → ``Connection.Start`` → ``StartOk`` with PLAIN credentials (a wrong user or
password: 403 ACCESS_REFUSED, as RabbitMQ 3.10 answers a client that announces
``authentication_failure_close``) → ``Tune`` → ``TuneOk`` (a ``frame_max`` or
``channel_max`` above ours is refused) → ``Open`` (an unknown vhost: 530 NOT_ALLOWED) →
``OpenOk``. Afterwards channel 0 carries heartbeats and the close handshake, in either
direction; while our ``Connection.Close`` waits for its ``CloseOk``, everything else the
client sends is discarded (spec 4.2.7).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from pamqp import commands

from ._errors import (
    ACCESS_REFUSED,
    COMMAND_INVALID,
    FRAME_ERROR,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    UNEXPECTED_FRAME,
    ConnectionError,
)
from ._frames import FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER, decode_method, encode_method
from ._vhost import VHost

__all__ = ["ConnectionState", "Handshake"]


class ConnectionState(enum.Enum):
    HEADER = "header"  #: waiting for the protocol header
    START_OK = "start_ok"
    TUNE_OK = "tune_ok"
    OPEN = "open"  #: waiting for Connection.Open
    OPENED = "opened"
    CLOSING = "closing"  #: we sent Connection.Close
    CLOSED = "closed"


class Handshake:
    """Channel 0 of :class:`~._connection.ServerConnection` (which sets the attributes)."""

    state: ConnectionState
    frame_max: int
    channel_max: int
    heartbeat: int
    username: str
    cancel_notify: bool
    client_properties: dict[str, Any]
    vhost: VHost | None
    _users: dict[str, str]
    _vhosts: Callable[[str], VHost | None]
    _server_properties: dict[str, Any]

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def _refuse_protocol(self) -> None:
        """Not AMQP 0-9-1: answer with the version we speak and hang up (spec 4.2.2)."""
        self.send(PROTOCOL_HEADER)
        self.state = ConnectionState.CLOSED

    # --------------------------------------------------------------- channel 0

    def _on_channel_zero(self, kind: int, data: bytes, pos: int, start: int, end: int) -> None:
        if kind == FRAME_HEARTBEAT:
            if end != start:
                raise ConnectionError(FRAME_ERROR, "heartbeat frame with a payload")
            return
        if kind != FRAME_METHOD:
            raise ConnectionError(UNEXPECTED_FRAME, f"frame type {kind} on channel 0")
        if end - start < 4:
            raise ConnectionError(FRAME_ERROR, "method frame too short")
        method = decode_method(data[pos : end + 1])
        state = self.state
        if state is ConnectionState.CLOSING:
            if isinstance(method, commands.Connection.Close):
                self.send(encode_method(0, commands.Connection.CloseOk()))
            if isinstance(method, commands.Connection.Close | commands.Connection.CloseOk):
                self.state = ConnectionState.CLOSED
            return  # everything else is discarded until CloseOk
        expected = {
            ConnectionState.START_OK: commands.Connection.StartOk,
            ConnectionState.TUNE_OK: commands.Connection.TuneOk,
            ConnectionState.OPEN: commands.Connection.Open,
        }.get(state)
        if isinstance(method, commands.Connection.Close):
            self.send(encode_method(0, commands.Connection.CloseOk()))
            self.release()
            self.state = ConnectionState.CLOSED
        elif expected is not None and isinstance(method, expected):
            getattr(self, f"_on_{state.value}")(method)
        elif isinstance(method, commands.Connection.UpdateSecret):
            raise ConnectionError(
                NOT_IMPLEMENTED, "memory broker does not implement connection.update-secret"
            )
        else:
            raise ConnectionError(
                COMMAND_INVALID if expected is None else UNEXPECTED_FRAME,
                f"unexpected {method.name} on channel 0",
            )

    def _start(self) -> None:
        self.send(
            encode_method(
                0,
                commands.Connection.Start(
                    version_major=0,
                    version_minor=9,
                    server_properties=self._server_properties,
                    mechanisms="PLAIN",
                    locales="en_US",
                ),
            )
        )
        self.state = ConnectionState.START_OK

    def _on_start_ok(self, method: commands.Connection.StartOk) -> None:
        self.client_properties = dict(method.client_properties or {})
        capabilities = self.client_properties.get("capabilities")
        self.cancel_notify = isinstance(capabilities, dict) and bool(
            capabilities.get("consumer_cancel_notify")
        )
        if method.mechanism != "PLAIN":
            raise ConnectionError(
                COMMAND_INVALID, f"unknown authentication mechanism '{method.mechanism}'"
            )
        response = method.response or ""
        parts = response.split("\0")
        user, password = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        if not user or self._users.get(user) != password:
            raise ConnectionError(
                ACCESS_REFUSED,
                "Login was refused using authentication mechanism PLAIN. For details see the "
                "broker logfile.",
            )
        self.username = user
        self.send(
            encode_method(
                0,
                commands.Connection.Tune(
                    channel_max=self.channel_max,
                    frame_max=self.frame_max,
                    heartbeat=self.heartbeat,
                ),
            )
        )
        self.state = ConnectionState.TUNE_OK

    def _on_tune_ok(self, method: commands.Connection.TuneOk) -> None:
        frame_max = method.frame_max or self.frame_max
        if frame_max > self.frame_max or frame_max < 4096:
            raise ConnectionError(
                NOT_ALLOWED, f"frame_max={frame_max} outside 4096..{self.frame_max}"
            )
        channel_max = method.channel_max or self.channel_max
        if channel_max > self.channel_max:
            raise ConnectionError(
                NOT_ALLOWED, f"channel_max={channel_max} > {self.channel_max} (the server's)"
            )
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = method.heartbeat or 0
        self.state = ConnectionState.OPEN

    def _on_open(self, method: commands.Connection.Open) -> None:
        name = method.virtual_host or "/"
        vhost = self._vhosts(name)
        if vhost is None:
            raise ConnectionError(NOT_ALLOWED, f"vhost {name} not found")
        self.vhost = vhost
        self.send(encode_method(0, commands.Connection.OpenOk()))
        self.state = ConnectionState.OPENED
