"""AckTracker (no broker): per-message decisions become as few ack/nack/reject frames as
possible, and are never wrong.

The channel is a small fake that records the calls the tracker makes on it (a fake of the
channel object, not of the broker): the frames are then checked, or replayed with the
protocol's ``multiple`` semantics to prove every delivery is settled exactly once, with
exactly the action decided for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioworker import Actions
from trioworker.amqp import ChannelClosedError, ConnectionLostError
from trioworker.backends.amqp._acks import AckTracker


@dataclass(frozen=True)
class Frame:
    method: str  # "ack" | "nack" | "reject"
    tag: int
    multiple: bool
    requeue: bool


class FakeChannel:
    """Records basic_ack/basic_nack/basic_reject; can be told to fail like a dead channel."""

    def __init__(self, number: int = 1) -> None:
        self.number = number
        self.frames: list[Frame] = []
        self.error: Exception | None = None

    @property
    def is_closed(self) -> bool:
        return self.error is not None

    def _record(self, frame: Frame) -> None:
        if self.error is not None:
            raise self.error
        self.frames.append(frame)

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._record(Frame("ack", delivery_tag, multiple, False))

    def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._record(Frame("nack", delivery_tag, multiple, requeue))

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self._record(Frame("reject", delivery_tag, False, requeue))


def make_tracker(tags: range | list[int]) -> tuple[AckTracker, FakeChannel]:
    channel = FakeChannel()
    tracker = AckTracker(channel)  # type: ignore[arg-type]
    for tag in tags:
        tracker.track(tag)
    return tracker, channel


ACK, REJECT, REQUEUE = Actions.ACK, Actions.REJECT, Actions.REQUEUE


def action_of(frame: Frame) -> Actions:
    if frame.method == "ack":
        return ACK
    return REQUEUE if frame.requeue else REJECT


def test_contiguous_acks_become_one_multiple_ack_with_the_last_tag() -> None:
    tracker, channel = make_tracker(range(1, 257))
    tracker.decide_many([(tag, ACK) for tag in range(1, 257)])
    assert channel.frames == [Frame("ack", 256, True, False)]
    assert tracker.outstanding == 0
    assert len(channel.frames) == 1


def test_a_lone_ack_is_sent_at_once() -> None:
    tracker, channel = make_tracker([1, 2])
    tracker.decide_many([(1, ACK)])
    assert [(f.method, f.tag) for f in channel.frames] == [("ack", 1)]
    assert tracker.outstanding == 1


def test_decisions_behind_an_undecided_head_go_out_one_frame_each() -> None:
    """A multiple ack for 5 would settle the undecided 1; holding 2..5 back instead would
    let a slow call fill the prefetch window with handled messages and stall the route."""
    tracker, channel = make_tracker(range(1, 6))
    for tag in (2, 3, 5):
        tracker.decide_many([(tag, ACK)])
    tracker.decide_many([(4, ACK)])
    assert channel.frames == [Frame("ack", tag, False, False) for tag in (2, 3, 5, 4)]
    assert tracker.outstanding == 1
    tracker.decide_many([(1, ACK)])
    assert channel.frames[4:] == [Frame("ack", 1, False, False)]
    assert tracker.outstanding == 0


def test_out_of_order_bulks_are_settled_without_waiting_for_the_head() -> None:
    # concurrency > 1: the second bulk finishes first.
    tracker, channel = make_tracker(range(1, 9))
    tracker.decide_many([(tag, ACK) for tag in range(5, 9)])
    assert channel.frames == [Frame("ack", tag, False, False) for tag in range(5, 9)]
    tracker.decide_many([(tag, ACK) for tag in range(1, 5)])
    # The head run may span the settled tags but ends on the last tag decided now.
    assert channel.frames[4:] == [Frame("ack", 4, True, False)]
    assert tracker.outstanding == 0


def test_a_head_run_spans_tags_settled_out_of_order() -> None:
    tracker, channel = make_tracker(range(1, 8))
    tracker.decide_many([(3, REJECT)])
    tracker.decide_many([(1, ACK), (2, ACK), (4, ACK), (5, ACK)])
    assert channel.frames == [Frame("reject", 3, False, False), Frame("ack", 5, True, False)]
    assert tracker.outstanding == 2


def test_runs_of_different_actions_become_separate_frames_in_tag_order() -> None:
    tracker, channel = make_tracker(range(1, 11))
    decisions = [
        *[(1, ACK), (2, ACK), (3, ACK)],
        *[(4, REQUEUE), (5, REQUEUE)],
        *[(6, REJECT), (7, REJECT), (8, REJECT)],
        (9, ACK),
        (10, REQUEUE),
    ]
    tracker.decide_many(decisions)
    assert channel.frames == [
        Frame("ack", 3, True, False),
        Frame("nack", 5, True, True),
        Frame("nack", 8, True, False),
        Frame("ack", 9, False, False),
        Frame("reject", 10, False, True),
    ]
    assert tracker.outstanding == 0


def test_a_run_of_one_rejection_is_a_single_reject_frame() -> None:
    tracker, channel = make_tracker([1, 2, 3])
    tracker.decide_many([(1, REJECT), (2, ACK), (3, REQUEUE)])
    assert channel.frames == [
        Frame("reject", 1, False, False),
        Frame("ack", 2, False, False),
        Frame("reject", 3, False, True),
    ]


def test_the_decided_head_run_is_one_frame_and_the_rest_single_frames() -> None:
    tracker, channel = make_tracker(range(1, 7))
    tracker.decide_many([(1, ACK), (2, ACK), (4, ACK), (5, ACK)])
    assert channel.frames == [
        Frame("ack", 2, True, False),
        Frame("ack", 4, False, False),
        Frame("ack", 5, False, False),
    ]
    assert tracker.outstanding == 2
    tracker.decide_many([(3, ACK)])
    assert channel.frames[3:] == [Frame("ack", 3, False, False)]
    tracker.decide_many([(6, REJECT)])
    assert channel.frames[4:] == [Frame("reject", 6, False, False)]
    assert tracker.outstanding == 0


@pytest.mark.parametrize(
    "error",
    [
        ChannelClosedError(406, "PRECONDITION_FAILED - unknown delivery tag"),
        ConnectionLostError("socket closed"),
    ],
    ids=["channel-closed", "connection-lost"],
)
def test_a_dead_channel_drops_the_decisions_and_raises_nothing(error: Exception) -> None:
    tracker, channel = make_tracker(range(1, 5))
    channel.error = error
    tracker.decide_many([(1, ACK), (2, ACK), (3, REJECT)])  # must not raise
    tracker.decide_many([(4, ACK)])
    assert channel.frames == []
    assert tracker.outstanding == 0, "decisions for a dead channel are dropped, not kept"
    tracker.flush()
    assert channel.frames == []


def test_the_dropped_count_is_what_the_log_line_says(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11: "N decisions dropped" logged 0 nine times while the metric said 10. The
    tracker returns the number it logs, and the caller counts exactly that."""
    tracker, channel = make_tracker(range(1, 11))
    tracker.decide_many([(1, ACK)])
    channel.error = ChannelClosedError(406, "PRECONDITION_FAILED - ack timed out")
    with caplog.at_level("INFO", logger="trioworker.amqp"):
        counts = [tracker.decide_many([(tag, ACK)]) for tag in range(2, 11)]
    logged = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) decisions dropped", r.getMessage()))
    ]
    assert counts == [1] * 9
    assert logged == counts


# ---------------------------------------------------------------------- property


def replay(frames: list[tuple[int, Frame]], tags: list[int]) -> dict[int, tuple[Actions, int]]:
    """Settle tags as the broker would; return {tag: (action, step of the frame)}.

    A ``multiple`` frame settles every unsettled tag up to and including its tag; a single
    one settles exactly its tag, which must exist and be unsettled.
    """
    unsettled = sorted(tags)
    settled: dict[int, tuple[Actions, int]] = {}
    for step, frame in frames:
        if frame.multiple:
            covered = [tag for tag in unsettled if tag <= frame.tag]
            assert frame.tag in covered, f"multiple frame for unknown/settled tag: {frame}"
        else:
            assert frame.tag in unsettled, f"frame for an unknown or settled tag: {frame}"
            covered = [frame.tag]
        for tag in covered:
            settled[tag] = (action_of(frame), step)
            unsettled.remove(tag)
    return settled


@st.composite
def decision_plans(draw: Any) -> tuple[int, dict[int, Actions], list[list[int]]]:
    """Tags 1..N, an action per tag, and the decisions grouped into calls in random order."""
    count = draw(st.integers(min_value=1, max_value=60))
    actions = draw(
        st.lists(st.sampled_from([ACK, REJECT, REQUEUE]), min_size=count, max_size=count)
    )
    order = draw(st.permutations(list(range(1, count + 1))))
    groups: list[list[int]] = []
    i = 0
    while i < count:
        size = draw(st.integers(min_value=1, max_value=count - i))
        groups.append(list(order[i : i + size]))
        i += size
    return count, dict(zip(range(1, count + 1), actions, strict=True)), groups


@settings(max_examples=300, deadline=None)
@given(plan=decision_plans(), single=st.booleans())
def test_any_interleaving_settles_every_tag_once_with_its_decided_action(
    plan: tuple[int, dict[int, Actions], list[list[int]]], single: bool
) -> None:
    count, actions, groups = plan
    tags = list(range(1, count + 1))
    tracker, channel = make_tracker(tags)
    stamped: list[tuple[int, Frame]] = []
    decided_at: dict[int, int] = {}
    for step, group in enumerate(groups):
        before = len(channel.frames)
        for tag in group:
            decided_at[tag] = step
        if single or len(group) == 1:
            for tag in group:
                tracker.decide_many([(tag, actions[tag])])
        else:
            tracker.decide_many([(tag, actions[tag]) for tag in group])
        stamped.extend((step, frame) for frame in channel.frames[before:])

    settled = replay(stamped, tags)
    assert sorted(settled) == tags, "every tag is settled once all are decided"
    for tag in tags:
        action, step = settled[tag]
        assert action is actions[tag], f"tag {tag}: sent {action}, decided {actions[tag]}"
        assert step >= decided_at[tag], f"tag {tag} was settled before it was decided"
    assert tracker.outstanding == 0


@settings(max_examples=100, deadline=None)
@given(plan=decision_plans())
def test_decisions_in_tag_order_in_one_call_cost_exactly_one_frame_per_run(
    plan: tuple[int, dict[int, Actions], list[list[int]]],
) -> None:
    count, actions, _ = plan
    tags = list(range(1, count + 1))
    tracker, channel = make_tracker(tags)
    tracker.decide_many([(tag, actions[tag]) for tag in tags])
    runs = 1 + sum(actions[t] is not actions[t + 1] for t in range(1, count))
    assert len(channel.frames) == runs
    settled = replay(list(enumerate(channel.frames)), tags)
    assert {tag: action for tag, (action, _) in settled.items()} == actions
