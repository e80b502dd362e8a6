"""What the app asks of a backend (AMQP, HTTP, SSE, timers).

The app owns one nursery; each backend runs in it as one task. The contract is small on
purpose, so a backend can be written and tested on its own:

- ``run(task_status=...)`` starts the backend and calls ``task_status.started()`` once it
  is ready (AMQP: first connection attempt done; HTTP: socket bound), then returns only
  after :meth:`stop` has drained it. Work registered while it runs (a route added to a
  running app) starts at once.
- ``stop()`` begins a graceful stop and returns at once; it is idempotent.
- ``health()`` says whether the backend does its job right now, for ``GET /health``.
- optionally ``handlers()``: ``(route name, handler)`` of each route, so the blocked-loop
  watchdog (``trioworker/_watchdog.py``) can name the route whose handler blocks the loop.

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
    from ._pools import Pools

__all__ = ["AppServices", "Backend", "Health", "slow_call"]


@dataclass(frozen=True)
class Health:
    """A backend's state, for ``/health``: ``ok`` and, when not, why.

    ``degraded`` (with ``ok``) means the backend works but something in it is slow right
    now — a handler call running past its route's ``timeout`` or the app's
    ``slow_handler_threshold``. That is worth a look, not a restart: ``/health`` still
    answers 200, with ``"status": "degraded"`` and the detail (docs/http.md). A backend
    that is not ``ok`` makes it 503.
    """

    ok: bool
    detail: str = ""
    degraded: bool = False

    @property
    def status(self) -> str:
        """``"ok"``, ``"degraded"`` or ``"unavailable"``."""
        if not self.ok:
            return "unavailable"
        return "degraded" if self.degraded else "ok"


def slow_call(
    route: str, running: float | None, timeout: float | None, threshold: float | None
) -> str:
    """The ``/health`` note for a route whose oldest running handler call has run
    ``running`` seconds, if that is past the route's ``timeout`` — or, without one, past
    the app's ``threshold`` (``slow_handler_threshold``; None: off); else ``""``.

    A call past its timeout is one that ignores cancellation (a blocking call, a shielded
    scope): the timeout cannot end it, so it is reported rather than waited out.
    """
    limit = timeout if timeout is not None else threshold
    if running is None or limit is None or running <= limit:
        return ""
    past = f"its {limit:g} s timeout" if timeout is not None else f"{limit:g} s"
    return f"route {route!r}: a handler call has been running for {running:.1f} s (past {past})"


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

    @property
    def pools(self) -> Pools:
        """The app's named pools (``app.pool()``), which ``pool=`` on a route names."""
        ...

    @property
    def trio_token(self) -> trio.lowlevel.TrioToken | None:
        """The trio run serving the app, while it runs (``publish_sync`` from threads)."""
        ...

    @property
    def slow_handler_threshold(self) -> float | None:
        """Seconds a handler call of a route without ``timeout`` may run before
        ``health()`` reports it (degraded); None: never."""
        ...

    def health(self) -> dict[str, Health]:
        """Each running backend's health, by name."""
        ...
