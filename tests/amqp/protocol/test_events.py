"""Events: frozen where they never change; messages decode their properties lazily."""

from __future__ import annotations

import dataclasses

import pytest
from pamqp import commands

from trioworker.amqp.protocol import (
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    MethodReceived,
    PropertyDecodeError,
    PublishConfirmed,
)

FROZEN = [
    ConnectionOpened({"product": "RabbitMQ"}, 2047, 131072, 60),
    ConnectionClosed(320, "CONNECTION_FORCED", by_peer=True),
    ConnectionBlocked("disk"),
    ConnectionUnblocked(),
    ChannelOpened(1),
    ChannelClosed(1, 406, "PRECONDITION_FAILED", by_peer=True, class_id=50, method_id=10),
    ChannelFlow(1, False),
    MethodReceived(1, commands.Basic.QosOk()),
    ConsumerCancelled(1, "ctag"),
    PublishConfirmed(1, [3, 4], True),
]


@pytest.mark.parametrize("event", FROZEN, ids=lambda e: type(e).__name__)
def test_immutable_events_are_frozen_slotted_dataclasses(event: object) -> None:
    assert dataclasses.is_dataclass(event)
    assert not hasattr(event, "__dict__")
    fields = dataclasses.fields(event)  # type: ignore[arg-type]
    copy = type(event)(*(getattr(event, f.name) for f in fields))
    assert copy == event
    assert repr(copy) == repr(event)
    for field in fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field.name, None)


def test_publish_confirmed_fields() -> None:
    event = PublishConfirmed(channel=2, delivery_tags=[5], ack=False)
    assert (event.channel, event.delivery_tags, event.ack) == (2, [5], False)
    assert repr(event) == "PublishConfirmed(channel=2, delivery_tags=[5], ack=False)"


def test_a_delivery_decodes_its_properties_once_and_lazily() -> None:
    raw = commands.Basic.Properties(content_type="text/plain").marshal()
    delivery = Delivery(1, "ctag", 1, False, "", "q", b"x", raw)
    assert delivery.raw_properties == raw
    first = delivery.properties
    assert first.content_type == "text/plain"
    assert delivery.properties is first
    assert "body=b'x'" in repr(delivery)


def test_a_bad_property_list_fails_when_read_only() -> None:
    delivery = Delivery(1, "ctag", 1, False, "", "q", b"x", b"\x80\x00\x05ab")
    assert delivery.body == b"x"  # the event itself is fine
    with pytest.raises(PropertyDecodeError):
        _ = delivery.properties
