"""Quorum queue arguments: what ``Queue`` derives (units), and that the cluster honours them.

A quorum queue with ``dead_letter=`` gets at-least-once dead-lettering, which RabbitMQ
applies only with ``x-overflow=reject-publish`` (with another overflow it silently falls
back to at-most-once): ``Queue`` sets both, and refuses a contradicting overflow.
``delivery_limit=`` becomes ``x-delivery-limit``: a message returned to the queue that many
times is dead-lettered by the broker.
"""

from __future__ import annotations

import secrets

import pytest
import trio

from tests.support.cluster import Cluster
from trioworker import App, Message, Queue, open_app

from ._helpers import delete_queues, fill, queue_state, wait_for, wait_for_value

# ------------------------------------------------------------------ units


def test_a_quorum_queue_with_a_dead_letter_queue_gets_at_least_once_and_a_limit() -> None:
    queue = Queue("orders", kind="quorum", dead_letter="orders.dlq", delivery_limit=5)
    assert queue.declare_arguments() == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "orders.dlq",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    dead_letters = queue.dead_letter_queue()
    assert dead_letters is not None and dead_letters.declare_arguments() == {
        "x-queue-type": "quorum"
    }


def test_at_least_once_needs_reject_publish() -> None:
    with pytest.raises(ValueError, match="at-least-once dead-lettering needs x-overflow"):
        Queue("q", kind="quorum", dead_letter="dlq", arguments={"x-overflow": "drop-head"})
    at_most_once = Queue(
        "q",
        kind="quorum",
        dead_letter="dlq",
        arguments={"x-overflow": "drop-head", "x-dead-letter-strategy": "at-most-once"},
    )
    assert at_most_once.declare_arguments()["x-overflow"] == "drop-head"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "classic", "delivery_limit": 3}, "delivery_limit= is for quorum queues"),
        ({"kind": "stream", "delivery_limit": 3}, "delivery_limit= is for quorum queues"),
        ({"kind": "quorum", "delivery_limit": 0}, "must be a positive int"),
        ({"kind": "quorum", "delivery_limit": True}, "must be a positive int"),
        (
            {"kind": "quorum", "delivery_limit": 3, "arguments": {"x-delivery-limit": 3}},
            "give delivery_limit= or x-delivery-limit, not both",
        ),
    ],
)
def test_a_delivery_limit_is_checked_when_the_queue_is_described(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Queue("q", **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------- on the cluster


@pytest.mark.cluster
@pytest.mark.slow
async def test_the_cluster_dead_letters_a_message_past_its_delivery_limit(
    healthy_cluster: Cluster,
) -> None:
    cluster = healthy_cluster
    name = f"tw-cluster-limited-{secrets.token_hex(4)}"
    queue = Queue(name, kind="quorum", dead_letter=f"{name}.dlq", delivery_limit=2)
    app = App(amqp_url=cluster.urls, name="tw-cluster-limited", grace_period=5)
    deliveries: list[object] = []  # the x-delivery-count the broker gave each delivery

    @app.amqp.consume([queue], declare=True)  # on_exception=REQUEUE: back to the queue
    async def refuse(messages: list[Message]) -> None:
        deliveries.extend(m.headers.get("x-delivery-count") for m in messages)
        raise RuntimeError("refused, to be requeued")

    try:
        async with open_app(app):
            await fill(cluster.urls[0], name, [7])

            async def dead_lettered() -> int:
                return (await queue_state(cluster, f"{name}.dlq"))[0]

            await wait_for_value(dead_lettered, 1, "the message in the dead-letter queue")
            await wait_for(lambda: len(deliveries) >= 3, "three deliveries")
        arguments = await trio.to_thread.run_sync(
            cluster.ctl, "list_queues", "-q", "name", "arguments"
        )
    finally:
        await delete_queues(cluster, name, f"{name}.dlq")
    # The first delivery, then one per return (the limit), then the dead-letter queue.
    assert deliveries == [None, 1, 2], deliveries
    line = next(line for line in arguments.splitlines() if line.startswith(f"{name}\t"))
    for argument in ("x-delivery-limit", "at-least-once", "reject-publish"):
        assert argument in line, line
