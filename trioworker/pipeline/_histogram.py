"""A histogram that is only a list of ints: cheap enough to observe on every bulk.

prometheus-client's ``Histogram.observe`` takes a lock and walks its buckets; here an
observation is one bisection and two additions, and nothing here knows about Prometheus.
The backends' metric sources (:mod:`trioworker.metrics`) turn these into metric families
when Prometheus scrapes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

__all__ = ["DURATION_BOUNDS", "SIZE_BOUNDS", "Histogram"]

#: Handler call durations (seconds): from a no-op to a bulk insert into a slow database.
DURATION_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Bulk sizes: powers of two up to the largest prefetch anyone uses.
SIZE_BOUNDS = tuple(float(2**i) for i in range(13))  # 1 .. 4096


class Histogram:
    """Counts of observations per bucket, their sum, and nothing else.

    ``bounds`` are the buckets' inclusive upper bounds (Prometheus ``le``); a last,
    implicit ``+Inf`` bucket takes everything larger.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds))
        if not self.bounds or any(math.isnan(b) or math.isinf(b) for b in self.bounds):
            raise ValueError("a histogram needs finite bucket bounds")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one value (``le`` semantics: a value equal to a bound falls in its bucket)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, observations <= le), ..., ("+Inf", count)]`` as Prometheus exposes them."""
        result: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            result.append((_format_bound(bound), running))
        result.append(("+Inf", running + self.counts[-1]))
        return result

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s observations to this one (same bounds required)."""
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different buckets")
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum


def _format_bound(bound: float) -> str:
    # Prometheus clients print bounds as floats ("1.0", "0.005"); keep to that form so
    # dashboards that select on le="1.0" work with ours as with any other exporter.
    return repr(float(bound))
