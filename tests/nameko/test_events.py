"""Nameko events both ways, against a real Nameko 2.14.1 service (tests/nameko/peer.py).

The peer dispatches with its ``EventDispatcher`` (its ``emit`` method, called over RPC) and
with ``nameko.standalone.events.event_dispatcher``; our handlers must be on the queues
Nameko's would be on, shared or not as Nameko's are. Our ``dispatch`` must reach the
peer's ``@event_handler``, carrying the context of what we were handling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.nameko.conftest import NamekoPeer
from tests.support.broker import MUST_HAPPEN, Broker, eventually
from trioworker import App, Message, Retry, nameko, open_app

pytestmark = [pytest.mark.broker, pytest.mark.interop, pytest.mark.slow]


async def wait_for(probe: Callable[[], bool], within: float = MUST_HAPPEN) -> None:
    async def check() -> bool:
        return probe()

    await eventually(check, bool, within)


def stack_shape(stack: list[str]) -> list[str]:
    """``svc.method`` of each call id (the uuids differ every run)."""
    shapes = []
    for call_id in stack:
        service, method, unique = call_id.split(".", 2)
        assert len(unique) == 36, call_id  # a uuid4, as Nameko writes it
        shapes.append(f"{service}.{method}")
    return shapes


def our_app(peer: NamekoPeer, make_app: Callable[..., App]) -> App:
    app = make_app(name=peer.our)
    peer.queues.append(app.nameko.reply_queue)
    return app


async def test_service_pool_instances_compete_for_events(
    nameko_peer: NamekoPeer, make_app: Callable[..., App], broker: Broker
) -> None:
    peer = nameko_peer
    queue = f"evt-{peer.name}-pooled--{peer.our}.on_pooled"
    peer.queues.append(queue)
    got: list[list[Any]] = [[], []]
    stacks: list[list[str]] = []
    apps = [our_app(peer, make_app) for _ in range(2)]
    for index, app in enumerate(apps):

        @app.nameko.event_handler(peer.name, "pooled")
        async def on_pooled(payload: Any, index: int = index) -> None:
            got[index].append(payload)
            context = nameko.current_context()
            assert context is not None
            stacks.append(context.call_id_stack)

    async with open_app(apps[0]) as first, open_app(apps[1]):
        emitted = await first.nameko.call(
            peer.name, "emit", "pooled", [{"n": n} for n in range(20)]
        )
        await wait_for(lambda: len(got[0]) + len(got[1]) >= 20)
        await trio.sleep(0.3)  # nothing more comes: each event went to one instance
    assert sorted(p["n"] for p in got[0] + got[1]) == list(range(20))
    assert got[0] and got[1], "both instances consume the one service_pool queue"
    assert await broker.exists(queue)  # Nameko's name, durable: still there
    # The event carries the dispatching worker's stack; our handler adds its own call id.
    assert stack_shape(stacks[0]) == [
        f"{peer.our}.call",
        f"{peer.name}.emit",
        f"{peer.our}.on_pooled",
    ]
    assert stacks[0][:2] == emitted


async def test_broadcast_reaches_every_instance(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    peer = nameko_peer
    got: list[list[Any]] = [[], []]
    apps = [our_app(peer, make_app) for _ in range(2)]
    for index, app in enumerate(apps):

        @app.nameko.event_handler(peer.name, "shout", "broadcast", reliable_delivery=False)
        async def on_shout(payload: Any, index: int = index) -> None:
            got[index].append(payload)

    async with open_app(apps[0]) as first, open_app(apps[1]):
        await first.nameko.call(peer.name, "emit", "shout", ["a", "b", "c"])
        await wait_for(lambda: len(got[0]) == 3 and len(got[1]) == 3)
    assert got == [["a", "b", "c"], ["a", "b", "c"]]


async def test_broadcast_with_reliable_delivery_needs_an_identifier(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    app = our_app(nameko_peer, make_app)
    with pytest.raises(ValueError, match="broadcast_identifier"):
        app.nameko.event_handler(nameko_peer.name, "shout", "broadcast")


async def test_singleton_handler_and_the_standalone_dispatcher(
    nameko_peer: NamekoPeer, make_app: Callable[..., App], broker: Broker
) -> None:
    peer = nameko_peer
    queue = f"evt-{peer.name}-lonely"
    peer.queues.append(queue)
    app = our_app(peer, make_app)
    got: list[tuple[Any, dict[str, Any]]] = []

    @app.nameko.event_handler(peer.name, "lonely", handler_type="singleton")
    async def on_lonely(payload: Any, message: Message) -> None:
        got.append((payload, message.headers))

    async with open_app(app):
        assert await broker.exists(queue)
        await peer.run_script(
            "import os\n"
            "from nameko.standalone.events import event_dispatcher\n"
            "dispatch = event_dispatcher({'AMQP_URI': os.environ['AMQP_URI']})\n"
            "dispatch(os.environ['NK_SERVICE'], 'lonely', {'from': 'standalone', 'é': 'ü'})\n"
        )
        await wait_for(lambda: len(got) == 1)
    payload, _ = got[0]
    assert payload == {"from": "standalone", "é": "ü"}


async def test_bulk_handler_gets_payloads_messages_and_contexts(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    peer = nameko_peer
    peer.queues.append(f"evt-{peer.name}-many--{peer.our}.on_many")
    app = our_app(peer, make_app)
    bulks: list[list[Any]] = []
    contexts: list[nameko.NamekoContext] = []

    @app.nameko.event_handler(peer.name, "many", bulk_size=5, flush_interval=0.5)
    async def on_many(payloads: list[Any], messages: list[Message]) -> None:
        assert len(payloads) == len(messages)
        assert nameko.current_context() is None  # several events: no single context
        bulks.append(payloads)
        contexts.extend(nameko.context_of(m) for m in messages)

    async with open_app(app):
        await app.nameko.call(peer.name, "emit", "many", list(range(5)))
        await wait_for(lambda: sum(map(len, bulks)) == 5)
    assert [p for bulk in bulks for p in bulk] == [0, 1, 2, 3, 4]
    assert max(map(len, bulks)) > 1  # they came in bulks
    assert len({c.call_id for c in contexts}) == 5  # one context per event
    assert all(c.immediate_parent_call_id == contexts[0].immediate_parent_call_id for c in contexts)


async def test_failed_event_is_retried_with_its_context(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    peer = nameko_peer
    queue = f"evt-{peer.name}-flaky--{peer.our}.on_flaky"
    peer.queues += [queue, f"{queue}.retry.200", f"{queue}.dlq"]
    app = our_app(peer, make_app)
    attempts: list[tuple[int, list[str]]] = []

    @app.nameko.event_handler(peer.name, "flaky", retry=Retry(attempts=2, delays=(0.2,)))
    async def on_flaky(payload: Any, message: Message) -> None:
        context = nameko.current_context()
        assert context is not None
        attempts.append((message.attempt, context.parent_call_ids))
        if message.attempt == 1:
            raise RuntimeError("first time unlucky")

    async with open_app(app):
        await app.nameko.call(peer.name, "emit", "flaky", ["x"])
        await wait_for(lambda: len(attempts) == 2)
    assert [a for a, _ in attempts] == [1, 2]
    assert attempts[0][1] == attempts[1][1]  # the retried copy kept its nameko headers


async def test_our_dispatch_reaches_nameko_with_the_context(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    """peer.emit → ping → our on_ping → dispatch pong → peer.on_pong: the stack grows."""
    peer = nameko_peer
    peer.queues.append(f"evt-{peer.name}-ping--{peer.our}.on_ping")
    app = our_app(peer, make_app)

    @app.nameko.event_handler(peer.name, "ping")
    async def on_ping(payload: Any) -> None:
        await app.nameko.dispatch("pong", {"echo": payload})

    async with open_app(app):
        await app.nameko.dispatch("hello", {"plain": True})  # outside any handler
        await app.nameko.call(peer.name, "emit", "ping", [{"x": 1}])

        async def received() -> tuple[list[Any], list[Any]]:
            return (
                await app.nameko.call(peer.name, "received", "pong"),
                await app.nameko.call(peer.name, "received", "hello"),
            )

        pongs, hellos = await eventually(received, all)
    assert pongs[0]["payload"] == {"echo": {"x": 1}}
    assert stack_shape(pongs[0]["call_id_stack"]) == [
        f"{peer.our}.call",
        f"{peer.name}.emit",
        f"{peer.our}.on_ping",
        f"{peer.name}.on_pong",
    ]
    assert hellos[0]["payload"] == {"plain": True}
    assert stack_shape(hellos[0]["call_id_stack"]) == [
        f"{peer.our}.dispatch",
        f"{peer.name}.on_hello",
    ]


@dataclasses.dataclass
class Paid:
    amount: int


async def test_typed_payloads_and_bodies_that_do_not_fit(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    peer = nameko_peer
    peer.queues.append(f"evt-{peer.name}-paid--{peer.our}.on_paid")
    app = our_app(peer, make_app)
    got: list[Paid] = []

    @app.nameko.event_handler(peer.name, "paid")
    async def on_paid(paid: Paid) -> None:
        got.append(paid)

    async with open_app(app):
        # The second cannot become a Paid: rejected (not requeued), the others go on.
        await app.nameko.call(peer.name, "emit", "paid", [{"amount": 1}, {"x": 1}, {"amount": 3}])
        await wait_for(lambda: len(got) == 2)
    assert got == [Paid(1), Paid(3)]


async def test_a_handler_finishing_during_shutdown_still_gets_its_reply(
    nameko_peer: NamekoPeer, make_app: Callable[..., App]
) -> None:
    """Replies come on the publishing connection, which outlives the consumers: a handler
    in its grace period can still call Nameko."""
    peer = nameko_peer
    peer.queues.append(f"evt-{peer.name}-late--{peer.our}.on_late")
    app = our_app(peer, make_app)
    started, go = trio.Event(), trio.Event()
    results: list[int] = []

    @app.nameko.event_handler(peer.name, "late")
    async def on_late(payload: int) -> None:
        started.set()
        await go.wait()
        results.append(await app.nameko.call(peer.name, "add", payload, 1, timeout=10))

    async with open_app(app):
        await app.nameko.call(peer.name, "emit", "late", [41])
        await started.wait()
        app.shutdown()  # the route stops consuming; the handler is in its grace period
        await trio.sleep(0.5)
        go.set()
    assert results == [42]
