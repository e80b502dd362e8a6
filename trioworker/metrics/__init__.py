"""Prometheus metrics of an app (``app.metrics``, ``GET /metrics``) and timing helpers.

Backends count into plain attributes; :class:`Metrics` turns them into metric families
only when Prometheus scrapes (see :mod:`._collector`).
"""

from ._collector import Metrics, MetricsSource
from ._families import add_histogram, merged
from ._timeit import Timeit

__all__ = ["Metrics", "MetricsSource", "Timeit", "add_histogram", "merged"]
