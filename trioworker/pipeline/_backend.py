"""What the app asks of a backend (AMQP, HTTP, SSE, timers).

The app owns one nursery; each backend runs in it as one task. The contract is small on
purpose, so a backend can be written and tested on its own:

- ``run(task_status=...)`` starts the backend and calls ``task_status.started()`` once it
  is ready (AMQP: first connection attempt done; HTTP: socket bound), then returns only
  after :meth:`stop` has drained it. Work registered while it runs (a route added to a
  running app) starts at once.
- ``stop()`` begins a graceful stop and returns at once; it is idempotent.
- ``health()`` says whether the backend does its job right now, for ``GET /health``.

A backend sees the app through :class:`AppServices`, not through ``App``: what it needs
(the name, the grace period, whether a shutdown is under way, starting a backend that
became active, the health of all, the metrics) and nothing else. That keeps the backends
importable and testable without the app, and keeps ``_app`` out of their imports (the
import graph has no cycle, ``TYPE_CHECKING`` imports included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["AppServices", "Backend", "Health"]


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


class AppServices(Protocol):
    """What a backend may ask of the app that runs it (``App`` implements it)."""

    @property
    def name(self) -> str:
        """The service name: connection names, Nameko services, logs."""
        ...

    @property
    def grace_period(self) -> float:
        """Seconds running handlers get to finish once a graceful stop began."""
        ...

    @property
    def shutting_down(self) -> bool:
        """True once a graceful stop was asked for."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The app's metrics (``render()`` for ``GET /metrics``, recorders)."""
        ...

    def start_backend(self, backend: Backend) -> bool:
        """Start ``backend`` now if the app runs and it is not running yet; whether it runs."""
        ...

    def health(self) -> dict[str, Health]:
        """Each running backend's health, by name."""
        ...
