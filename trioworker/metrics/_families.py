"""Helpers for building Prometheus metric families from our own histograms."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import HistogramMetricFamily

from ..pipeline._histogram import Histogram

__all__ = ["add_histogram", "merged"]


def merged(bounds: tuple[float, ...], histograms: Iterable[Histogram]) -> Histogram:
    """One histogram adding up ``histograms`` (all with ``bounds``): a series per label set."""
    total = Histogram(bounds)
    for histogram in histograms:
        total.merge(histogram)
    return total


def add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    """Add ``h`` to ``family`` as the series of ``labels``."""
    family.add_metric(labels, h.cumulative(), h.sum)
