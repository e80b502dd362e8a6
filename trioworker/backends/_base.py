"""What the app asks of a backend (AMQP, HTTP, SSE, timers).

The app owns one nursery; each backend runs in it as one task. The contract is small on
purpose, so a backend can be written and tested on its own:

- ``run(task_status=...)`` starts the backend and calls ``task_status.started()`` once it
  is ready (AMQP: first connection attempt done; HTTP: socket bound), then returns only
  after :meth:`stop` has drained it. Work registered while it runs (a route added to a
  running app) starts at once.
- ``stop()`` begins a graceful stop and returns at once; it is idempotent.
- ``health()`` says whether the backend does its job right now, for ``GET /health``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

__all__ = ["Backend", "Health"]


@dataclass(frozen=True)
class Health:
    """A backend's state: ``ok`` and, when not, why (shown in ``/health``'s JSON)."""

    ok: bool
    detail: str = ""


class Backend(Protocol):
    """A source of work the app runs: see the module docstring."""

    name: str

    @property
    def active(self) -> bool:
        """Whether the app must run this backend (it has routes, or is always on)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def stop(self) -> None: ...

    def health(self) -> Health: ...
