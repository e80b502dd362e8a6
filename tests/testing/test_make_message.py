"""``make_message``: a real Message for a unit test of a handler, with its decision visible."""

from __future__ import annotations

import pytest

from trioworker import Actions, InvalidMessageBody, Message
from trioworker.amqp import BasicProperties
from trioworker.testing import MessageStub, make_message


async def handle(messages: list[Message]) -> None:
    """A handler as users write them: per-message decisions from the body."""
    for m in messages:
        try:
            order = m.json()
        except InvalidMessageBody:
            continue  # json() has rejected it already
        if order.get("qty", 0) <= 0:
            m.reject(requeue=False)
        elif order.get("later"):
            m.retry(delay=30)
        elif m.redelivered:
            m.accept()


async def test_a_handler_s_decisions_are_recorded_on_the_messages() -> None:
    good, empty, later, again = (
        make_message({"qty": 1}),
        make_message({"qty": 0}),
        make_message({"qty": 1, "later": True}),
        make_message({"qty": 1}, redelivered=True),
    )
    broken = make_message(b"{not json")
    await handle([good, empty, later, again, broken])
    assert good.decision is None and not good.decided  # the route's on_success applies
    assert empty.decision is Actions.REJECT
    assert later.decision is Actions.RETRY and later.retry_delay == 30
    assert again.decision is Actions.ACK
    assert broken.decision is Actions.REJECT  # a body that does not decode: rejected


def test_the_message_is_the_class_routes_hand_out() -> None:
    message = make_message({"a": 1}, queue="orders")
    assert isinstance(message, Message) and isinstance(message, MessageStub)
    assert message.queue == "orders"
    assert message.routing_key == "orders"  # a publish to the default exchange names the queue
    assert message.exchange == ""
    assert message.json() == {"a": 1}
    assert message.body == b'{"a": 1}'
    assert message.properties.content_type == "application/json"
    assert message.properties.delivery_mode == 2  # persistent, as app.amqp.publish sends
    assert message.attempt == 1 and not message.redelivered


def test_bodies_are_encoded_as_app_amqp_publish_encodes_them() -> None:
    assert make_message(b"\x00raw").body == b"\x00raw"
    assert make_message("text é").body == "text é".encode()
    assert make_message([1, 2]).json() == [1, 2]
    assert make_message(5).json() == 5  # any other value: JSON
    assert make_message(None).body == b"null"
    gz = make_message({"big": "x" * 100}, codec="gzip+json")
    assert gz.properties.content_encoding == "gzip"
    assert gz.body[:2] == b"\x1f\x8b"


def test_headers_properties_and_routing_come_through_the_wire_encoding() -> None:
    message = make_message(
        {"a": 1},
        headers={"tenant": "acme", "n": 3},
        properties=BasicProperties(correlation_id="c-1", reply_to="replies"),
        routing_key="order.created",
        exchange="events",
        ttl=1.5,
        priority=4,
        redelivered=True,
        attempt=3,
    )
    assert message.headers["tenant"] == "acme" and message.headers["n"] == 3
    assert message.attempt == 3  # what a retried copy carries (x-trioworker-attempt)
    assert message.properties.correlation_id == "c-1"
    assert message.properties.reply_to == "replies"
    assert message.properties.expiration == "1500"
    assert message.properties.priority == 4
    assert (message.exchange, message.routing_key) == ("events", "order.created")
    assert message.redelivered


def test_each_message_gets_its_own_delivery_tag() -> None:
    tags = {make_message(i).delivery_tag for i in range(5)}
    assert len(tags) == 5
    assert make_message(1, delivery_tag=42).delivery_tag == 42


def test_retry_without_a_delay_leaves_it_to_the_route_policy() -> None:
    message = make_message({})
    message.retry()
    assert message.decision is Actions.RETRY and message.retry_delay is None
    message.reject()  # the last call wins, as on a route
    assert message.decision is Actions.REQUEUE


@pytest.mark.parametrize("attempt", [0, -1, 1.5, True])
def test_a_bad_attempt_is_refused(attempt: object) -> None:
    with pytest.raises(ValueError, match="attempt"):
        make_message({}, attempt=attempt)  # type: ignore[arg-type]


def test_a_header_amqp_cannot_carry_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="cannot be sent over AMQP"):
        make_message({}, headers={"when": object()})
