"""``app.http``: HTTP routes served by hypercorn, plus /health and /metrics."""

from ._backend import HTTPBackend

__all__ = ["HTTPBackend"]
