"""The connection handshake's decisions: what to answer ``Start`` and ``Tune`` with.

The sequence itself (Start → StartOk, Tune → TuneOk + Open, OpenOk) is a row each in
:data:`._state.CONNECTION_TRANSITIONS`; this module holds what the client decides along
the way, as functions of what the broker sent and what the caller asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pamqp import commands

from ._errors import COMMAND_INVALID, NOT_IMPLEMENTED, RemoteProtocolError

#: The largest frame we accept before ``Connection.Tune`` tells us the real limit.
DEFAULT_FRAME_MAX = 131072
DEFAULT_CHANNEL_MAX = 2047
#: The spec's frame-min-size: below it a peer could not even carry a content header with
#: ordinary properties.
FRAME_MIN_SIZE = 4096


def negotiate(client: int | None, server: int) -> int:
    """RabbitMQ's rule for heartbeat, frame_max and channel_max.

    ``None`` from the client means "whatever the server proposes". Otherwise 0 means "no
    limit", so if either side says 0 the other side's value wins (the greater of the two);
    if both set a limit, the smaller one is used.
    """
    if client is None:
        return server
    if client == 0 or server == 0:
        return max(client, server)
    return min(client, server)


def start_ok(
    start: commands.Connection.Start,
    *,
    username: str,
    password: str,
    client_properties: Mapping[str, Any],
    locale: str,
) -> commands.Connection.StartOk:
    """Our answer to ``Connection.Start``: PLAIN authentication with the credentials.

    Raises :class:`RemoteProtocolError` if the server speaks another protocol version or
    offers no PLAIN mechanism: nothing we could answer would be understood.
    """
    if (start.version_major, start.version_minor) != (0, 9):
        raise RemoteProtocolError(
            f"server speaks AMQP {start.version_major}-{start.version_minor}, not 0-9-1",
            COMMAND_INVALID,
        )
    mechanisms = (start.mechanisms or "").split()
    if "PLAIN" not in mechanisms:
        raise RemoteProtocolError(
            f"server offers no PLAIN authentication (offers: {mechanisms})", NOT_IMPLEMENTED
        )
    return commands.Connection.StartOk(
        client_properties=dict(client_properties),
        mechanism="PLAIN",
        response=f"\0{username}\0{password}",
        locale=locale,
    )


def refuse_secure() -> RemoteProtocolError:
    """``Connection.Secure`` asks for a SASL challenge round we never offered to do."""
    return RemoteProtocolError(
        "server sent Connection.Secure; only PLAIN authentication is supported",
        NOT_IMPLEMENTED,
    )


def tune_ok(
    tune: commands.Connection.Tune,
    *,
    channel_max: int,
    frame_max: int,
    heartbeat: int | None,
) -> commands.Connection.TuneOk:
    """The values in force after ``Connection.Tune``, negotiated with what we asked for.

    A ``frame_max`` below the spec's minimum is a broken or hostile peer, not a setting:
    it raises :class:`RemoteProtocolError`.
    """
    if 0 < (tune.frame_max or 0) < FRAME_MIN_SIZE:
        raise RemoteProtocolError(
            f"server proposed frame_max {tune.frame_max}, below the minimum of {FRAME_MIN_SIZE}",
            COMMAND_INVALID,
        )
    channels = negotiate(channel_max, tune.channel_max or 0) or DEFAULT_CHANNEL_MAX
    return commands.Connection.TuneOk(
        channel_max=min(channels, 65535),
        frame_max=negotiate(frame_max, tune.frame_max or 0) or DEFAULT_FRAME_MAX,
        heartbeat=negotiate(heartbeat, tune.heartbeat or 0),
    )
