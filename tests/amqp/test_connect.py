"""Connecting to the real broker: what is negotiated and what the broker sees."""

from __future__ import annotations

import json

import pytest
import trio

from tests.support import rabbitmqctl
from tests.support.helpers import MUST_HAPPEN, with_query
from trioworker.amqp import Connection, connect

pytestmark = pytest.mark.broker


async def broker_view(connection_name: str) -> dict[str, object]:
    """rabbitmqctl's row (name, timeout, frame_max, channel_max, state, client_properties)
    for the connection with this client-chosen name."""

    def run() -> str:
        return rabbitmqctl.run(
            "list_connections",
            "name",
            "timeout",
            "frame_max",
            "channel_max",
            "state",
            "client_properties",
            "--formatter",
            "json",
        )

    rows = json.loads(await trio.to_thread.run_sync(run))
    matches = []
    for row in rows:
        props = rabbitmqctl._properties_to_dict(row.get("client_properties"))
        if props.get("connection_name") == connection_name:
            row["client_properties"] = props
            matches.append(row)
    assert len(matches) == 1, f"expected one connection named {connection_name!r}: {rows!r}"
    return matches[0]


async def test_server_properties_and_limits(conn: Connection) -> None:
    props = conn.server_properties
    assert props["product"] == "RabbitMQ"
    assert props["capabilities"]["publisher_confirms"] is True
    assert props["capabilities"]["consumer_cancel_notify"] is True
    assert conn.frame_max == 131072
    assert conn.channel_max == 2047
    assert not conn.is_closed
    assert conn.error is None
    assert not conn.is_blocked


async def test_connection_name_and_properties_visible_to_broker(amqp_url: str, conn_name: str):
    async with connect(with_query(amqp_url, connection_name=conn_name, heartbeat=5)) as conn:
        row = await broker_view(conn_name)
        assert row["state"] == "running"
        assert row["timeout"] == 5  # the broker applied our TuneOk
        assert row["frame_max"] == conn.frame_max
        assert row["channel_max"] == conn.channel_max
        client = row["client_properties"]
        assert isinstance(client, dict)
        assert client["product"] == "trioworker"
        assert client["capabilities"]["connection.blocked"] is True
        assert client["capabilities"]["consumer_cancel_notify"] is True


@pytest.mark.parametrize(("query", "expected"), [({"heartbeat": 5}, 5), ({}, 60)])
async def test_heartbeat_negotiation(amqp_url: str, query: dict[str, int], expected: int):
    # Without the option, the broker's proposal (RabbitMQ's default: 60 s) is accepted.
    async with connect(with_query(amqp_url, **query)) as conn:
        assert conn.heartbeat == expected


async def test_keyword_options_override_the_url(amqp_url: str) -> None:
    async with connect(with_query(amqp_url, heartbeat=5), heartbeat=7, frame_max=8192) as conn:
        assert conn.heartbeat == 7
        assert conn.frame_max == 8192


async def test_frame_max_negotiation(amqp_url: str) -> None:
    async with connect(with_query(amqp_url, frame_max=4096, channel_max=16)) as conn:
        assert conn.frame_max == 4096
        assert conn.channel_max == 16


async def test_idle_connection_is_kept_alive_by_heartbeats(
    amqp_url: str, conn_name: str, resources
) -> None:
    """With heartbeat=2 the broker drops a silent client after ~4-6 s; ours must send
    heartbeats while idle (and accept the broker's) so that 7 idle seconds are harmless."""
    queue = resources.queue()
    async with connect(with_query(amqp_url, heartbeat=2, connection_name=conn_name)) as conn:
        assert conn.heartbeat == 2
        channel = await conn.open_channel()
        await trio.sleep(7)
        assert not conn.is_closed, conn.error
        with trio.fail_after(MUST_HAPPEN):
            ok = await channel.queue_declare(queue)
        assert ok.queue == queue
        row = await broker_view(conn_name)
        assert row["state"] == "running"
