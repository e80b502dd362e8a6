"""``backoff_delay``: exponential below the cap, never above it, jittered by U(0.5, 1).

``random.uniform`` is replaced by a recorder that answers one end of its range, so the
nominal delay (the jitter factor 1.0) and the smallest one (0.5) are exact; a seeded run
then checks the real jitter stays inside its range.
"""

from __future__ import annotations

import itertools
import random

import pytest

from trioworker.pipeline import _backoff
from trioworker.pipeline._backoff import backoff_delay


class Uniform:
    """Stands in for ``random.uniform``: records the ranges asked for, answers one end."""

    def __init__(self, end: str) -> None:
        self.end = end
        self.ranges: list[tuple[float, float]] = []

    def __call__(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b if self.end == "high" else a


@pytest.fixture
def nominal(monkeypatch: pytest.MonkeyPatch) -> Uniform:
    uniform = Uniform("high")
    monkeypatch.setattr(_backoff.random, "uniform", uniform)
    return uniform


@pytest.fixture
def shortest(monkeypatch: pytest.MonkeyPatch) -> Uniform:
    uniform = Uniform("low")
    monkeypatch.setattr(_backoff.random, "uniform", uniform)
    return uniform


def test_the_nominal_delay_doubles_per_attempt_below_the_cap(nominal: Uniform) -> None:
    delays = [backoff_delay(attempt, base=0.1, cap=100.0) for attempt in range(8)]
    assert delays == pytest.approx([0.1 * 2**attempt for attempt in range(8)])
    for earlier, later in itertools.pairwise(delays):
        assert later == pytest.approx(2 * earlier)


def test_the_jitter_range_is_half_to_all_of_the_nominal_delay(nominal: Uniform) -> None:
    backoff_delay(3, base=0.1, cap=100.0)
    assert nominal.ranges == [(0.5, 1.0)]


def test_the_shortest_delay_is_half_the_nominal(shortest: Uniform) -> None:
    assert backoff_delay(0, base=0.1, cap=100.0) == pytest.approx(0.05)
    assert backoff_delay(4, base=0.1, cap=100.0) == pytest.approx(0.8)


def test_the_cap_bounds_the_delay(nominal: Uniform) -> None:
    # 0.1 * 2**7 = 12.8 > 10: from there on the nominal delay is the cap itself.
    assert backoff_delay(6, base=0.1, cap=10.0) == pytest.approx(6.4)
    for attempt in (7, 8, 20, 30, 31, 1000, 10**9):
        assert backoff_delay(attempt, base=0.1, cap=10.0) == 10.0


def test_at_the_cap_the_jitter_keeps_at_least_half_of_it(shortest: Uniform) -> None:
    # The jitter applies to the capped delay, not before the cap: at the cap the wait is
    # still spread over [cap/2, cap], never collapsed to the cap for every worker.
    for attempt in (7, 50, 10**6):
        assert backoff_delay(attempt, base=0.1, cap=10.0) == pytest.approx(5.0)


def test_seeded_jitter_stays_within_its_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backoff, "random", random.Random(1234))
    cap = 10.0
    for attempt in range(40):
        nominal = min(cap, 0.1 * 2**attempt)
        delays = {backoff_delay(attempt, base=0.1, cap=cap) for _ in range(50)}
        assert all(nominal / 2 <= d <= nominal for d in delays), (attempt, delays)
        assert max(delays) <= cap
        assert len(delays) > 1, "no jitter"


def test_defaults_base_and_cap() -> None:
    for _ in range(100):
        assert 0.05 <= backoff_delay(0) <= 0.1
        assert 5.0 <= backoff_delay(100) <= 10.0
