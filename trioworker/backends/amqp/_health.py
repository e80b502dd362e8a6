"""What ``/health`` says about the broker: connections, consumers, and slow handler calls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...pipeline._backend import Health, slow_call

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["amqp_health"]


def amqp_health(supervisors: Iterable[Supervisor], slow_threshold: float | None) -> Health:
    """Healthy when every connection is open and every route consumes all its queues; the
    detail then names the node of each connection that has several.

    Degraded (still healthy: ``/health`` answers 200) while a route's oldest handler call
    runs past the route's ``timeout`` or, without one, past ``slow_threshold`` — one slow
    call is worth a look, not a restart of the worker.
    """
    supervisors = list(supervisors)
    problems = [problem for sup in supervisors for problem in sup.problems()]
    slow: list[str] = []
    for sup in supervisors:
        for run in sup.runs():
            route = run.route
            note = slow_call(route.name, run.longest_running_call(), route.timeout, slow_threshold)
            if note:
                slow.append(note)
    if problems:
        return Health(False, "; ".join(problems + slow), degraded=bool(slow))
    where = [w for w in (sup.whereabouts() for sup in supervisors) if w]
    return Health(True, "; ".join(slow + where), degraded=bool(slow))
