"""trioworker: structured-concurrency workers for RabbitMQ, HTTP, SSE and timers, on trio."""

from ._version import __version__

__all__ = ["__version__"]
