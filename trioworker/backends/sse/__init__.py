"""``app.sse``: Server-Sent Event streams read with httpx, batched into handlers."""

from ._backend import SSEBackend

__all__ = ["SSEBackend"]
