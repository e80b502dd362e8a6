"""StreamPosition on its own: whatever happens to deliveries — handled out of order,
requeued, dropped with their channel, cut off by a new connection — a consumer started
from ``consume_from()`` loses nothing, and hands over nothing already handled."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from trioworker import Actions
from trioworker.backends.amqp._streams import StreamPosition

LENGTH = 40  # the stream's messages: offsets 0..39


class Broker:
    """A consumer reading the stream from an offset, a few messages per step."""

    def __init__(self) -> None:
        self.at: int | None = None

    def consume(self, offset: object) -> None:
        self.at = 0 if offset == "first" else int(offset)  # type: ignore[call-overload]

    def deliver(self, count: int) -> list[int]:
        if self.at is None:
            return []
        batch = list(range(self.at, min(LENGTH, self.at + count)))
        self.at += len(batch)
        return batch


steps = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "ack", "reject", "requeue", "forget", "reconnect"]),
        st.integers(min_value=0, max_value=10),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.sampled_from([1024, 2]))
def test_nothing_lost_nothing_handled_twice(script: list[tuple[str, int]], prune: int) -> None:
    position = StreamPosition("first")
    position.PRUNE_AT = prune  # 2: prunes all the time
    broker = Broker()
    broker.consume(position.consume_from())
    in_handler: list[int] = []  # handed to the handler, not decided yet
    done: list[int] = []  # acked or rejected: handled for good
    handed: list[int] = []  # every hand-over, in order
    returned: Counter[int] = Counter()  # times an offset came back undone

    def step(action: str, n: int) -> None:
        if action == "deliver":
            for offset in broker.deliver(n + 1):
                if position.wanted(offset):
                    in_handler.append(offset)
                    handed.append(offset)
        elif action in ("ack", "reject", "requeue") and in_handler:
            offset = in_handler.pop(n % len(in_handler))  # decisions in any order
            decision = {"ack": Actions.ACK, "reject": Actions.REJECT}.get(action, Actions.REQUEUE)
            position.decided(offset, decision)
            if decision is Actions.REQUEUE:
                returned[offset] += 1
                broker.consume(position.consume_from())  # the rewind
            else:
                done.append(offset)
        elif action == "forget" and in_handler:
            offset = in_handler.pop(n % len(in_handler))
            returned[offset] += 1
            position.forget(offset)  # its channel died
            broker.consume(position.consume_from())
        elif action == "reconnect":
            returned.update(in_handler)
            in_handler.clear()  # the old run is gone with its handlers
            position.new_connection()
            broker.consume(position.consume_from())

    for action, n in script:
        step(action, n)
    # Then run to the end: every message gets handled.
    for _ in range(10 * LENGTH):
        if in_handler:
            position.decided(in_handler[0], Actions.ACK)
            done.append(in_handler.pop(0))
        else:
            step("deliver", 10)
    assert sorted(done) == list(range(LENGTH)), "each handled exactly once, none lost"
    for offset in range(LENGTH):
        # Handed over again only after it came back undone (requeued, dropped, cut off).
        assert handed.count(offset) <= 1 + returned[offset], (offset, handed, returned)


def test_a_new_position_starts_where_the_route_says() -> None:
    assert StreamPosition("next").consume_from() == "next"
    position = StreamPosition(5)
    assert position.consume_from() == 5
    assert position.wanted(5) and position.wanted(6)
    position.decided(6, Actions.ACK)
    assert position.consume_from() == 5  # 5 is not handled yet: start there, skip 6
    assert position.wanted(5) is False  # still in flight (its handler runs)
    assert position.wanted(6) is False  # handled
    position.decided(5, Actions.ACK)
    assert position.consume_from() == 7
    assert position.wanted(4) is False  # before where the consumer was asked to start
