"""Named thread and process pools: ``app.pool()`` and ``pool=`` on routes (docs/pools.md).

Without ``pool=`` an ``async def`` handler runs on the event loop and a plain ``def`` one in
a thread of trio's default limiter (shared by everything that uses ``trio.to_thread``). A
named pool gives a group of routes a bound of their own:

- ``kind="thread"``: ``trio.to_thread.run_sync`` with the pool's ``CapacityLimiter``;
- ``kind="process"``: worker processes of trio-parallel, with the same limiter.

One limiter per pool, shared by every route naming it, is the point: a slow route
exhausts *its* pool, never the calls of routes in other pools (micro_framework's Runner
contexts). Calls past the pool's ``size`` wait for a slot, in order.

Process pools run while the app serves: :meth:`Pools.open` opens one trio-parallel worker
context per pool around the app's nursery and closes it once every backend has stopped
(handlers finishing in their grace period still have their workers). Workers start on the
first call and are replaced when one dies or retires (``max_tasks_per_child``).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import pickle
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType
from typing import Any, Literal

import trio
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from .._errors import StartupError
from ._handlers import is_async
from ._processes import (
    RetireAfter,
    WorkerCrashedError,
    call_in_worker,
    check_importable,
    raise_or_return,
)

__all__ = ["Pool", "PoolKind", "Pools"]

log = logging.getLogger("trioworker.pools")

PoolKind = Literal["thread", "process"]

#: Seconds a worker process gets to exit once the app closes its pool (it is idle by then:
#: every call has returned); past that it is killed.
WORKER_EXIT_GRACE = 5.0


def _trio_parallel() -> ModuleType:
    try:
        return importlib.import_module("trio_parallel")
    except ImportError as exc:
        raise ImportError(
            "process pools need trio-parallel: pip install 'trioworker[process]'"
        ) from exc


class Pool:
    """A named pool of ``size`` threads or worker processes (see the module docstring).

    ``busy`` and ``waiting`` say how many calls run and wait right now; ``calls`` and
    ``crashes`` (process pools: calls whose worker died) count since the pool was declared.
    """

    def __init__(
        self,
        name: str,
        *,
        kind: PoolKind = "thread",
        size: int | None = None,
        max_tasks_per_child: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a pool needs a name, got {name!r}")
        if kind not in ("thread", "process"):
            raise ValueError(f"pool {name!r}: kind must be 'thread' or 'process', got {kind!r}")
        size = (os.cpu_count() or 1) if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"pool {name!r}: size must be an int >= 1, got {size!r}")
        if max_tasks_per_child is not None:
            if kind != "process":
                raise ValueError(f"pool {name!r}: max_tasks_per_child is for process pools")
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise ValueError(f"pool {name!r}: max_tasks_per_child must be an int or None")
            if max_tasks_per_child < 1:
                raise ValueError(f"pool {name!r}: max_tasks_per_child must be >= 1")
        self._parallel = _trio_parallel() if kind == "process" else None  # fail now, clearly
        self.name = name
        self.kind: PoolKind = kind
        self.size = size
        self.max_tasks_per_child = max_tasks_per_child
        self.limiter = trio.CapacityLimiter(size)
        self.calls = 0
        self.crashes = 0
        self._context: Any = None  # trio_parallel.WorkerContext while the app serves
        #: (what, handler) of every handler registered on this process pool: verified by
        #: pickling at open(), once their modules are fully imported.
        self._handlers: list[tuple[str, Callable[..., Any]]] = []

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} kind={self.kind} size={self.size} busy={self.busy}>"

    @property
    def busy(self) -> int:
        """Calls running now (a timed-out thread still running counts: it holds its slot)."""
        return int(self.limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        """Calls waiting for a free slot."""
        return int(self.limiter.statistics().tasks_waiting)

    @property
    def workers(self) -> int:
        """Live worker processes (0 for a thread pool, or while the app is not serving)."""
        context = self._context
        if context is None:
            return 0
        stats = context.statistics()
        return int(stats.idle_workers + stats.running_workers)

    def check_handler(self, handler: Callable[..., Any], what: str) -> None:
        """Refuse at registration a handler this pool cannot run: an ``async def`` one (a
        coroutine cannot go to a process, and a thread would only run the event loop's
        job), and for a process pool one its workers could not import."""
        if not callable(handler):
            raise TypeError(f"{what}: handler must be callable, got {handler!r}")
        if is_async(handler):
            name = getattr(handler, "__qualname__", repr(handler))
            if self.kind == "process":
                where = "a process cannot run a coroutine"
            else:
                where = "an async handler already runs on the event loop without blocking it"
            raise TypeError(
                f"{what}: pool={self.name!r} runs plain `def` handlers, and {name} is "
                f"`async def` ({where}); drop pool= or make the handler a plain def"
            )
        if self.kind == "process":
            check_importable(handler, what)
            self._handlers.append((what, handler))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the pool, at most ``size`` calls at once; return its value
        or raise its exception.

        Cancellation: a thread cannot be interrupted, it is abandoned (it runs to its end
        in the background and keeps its slot until then); a worker process is killed
        (trio-parallel's ``kill_on_cancel``) and replaced for the next call. A worker that
        dies meanwhile raises :class:`WorkerCrashedError`.
        """
        if self.kind == "thread":
            self.calls += 1
            return await trio.to_thread.run_sync(
                fn, *args, abandon_on_cancel=True, limiter=self.limiter
            )
        context = self._context
        if context is None:
            raise RuntimeError(
                f"pool {self.name!r} is not running: process pools run while the app serves"
            )
        assert self._parallel is not None
        self.calls += 1
        try:
            outcome = await context.run_sync(
                call_in_worker, fn, *args, kill_on_cancel=True, limiter=self.limiter
            )
        except self._parallel.BrokenWorkerError as exc:
            self.crashes += 1
            process = exc.args[-1] if exc.args else None
            code = getattr(process, "exitcode", None)
            if code is None:
                status = "exit status unknown"
            else:
                status = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
            raise WorkerCrashedError(
                f"a worker process of pool {self.name!r} died during the call ({status}); "
                "it is replaced for the next call"
            ) from exc
        return raise_or_return(outcome)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Keep the pool's workers for the duration of the block (process pools)."""
        if self._parallel is None:
            yield
            return
        for what, handler in self._handlers:
            try:
                pickle.dumps(handler)
            except Exception as exc:
                raise StartupError(
                    f"{what}: its handler cannot be sent to process pool {self.name!r}: "
                    f"{exc} (is the name bound in its module to another object, e.g. a "
                    "decorator applied after the route's?)"
                ) from exc
        retire = bool if self.max_tasks_per_child is None else RetireAfter(self.max_tasks_per_child)
        manager = self._parallel.open_worker_context(
            idle_timeout=math.inf, retire=retire, grace_period=WORKER_EXIT_GRACE
        )
        self._context = await manager.__aenter__()
        try:
            yield
        finally:
            self._context = None
            try:
                # Shielded by trio-parallel: waits for running calls (none by now, every
                # backend has stopped), then for the idle workers to exit.
                await manager.__aexit__(None, None, None)
            except self._parallel.BrokenWorkerError as exc:
                log.warning("pool %r: a worker did not exit cleanly: %s", self.name, exc)


class Pools:
    """The app's named pools (``app.pools``): declared with ``app.pool()``, named by
    ``pool=`` on routes, opened with the app."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        self._open = False

    def __iter__(self) -> Iterator[Pool]:
        return iter(list(self._pools.values()))

    def __len__(self) -> int:
        return len(self._pools)

    def declare(
        self,
        name: str,
        *,
        kind: PoolKind = "thread",
        size: int | None = None,
        max_tasks_per_child: int | None = None,
    ) -> Pool:
        """Declare pool ``name`` (see :class:`Pool`); a name is declared once."""
        if name in self._pools:
            raise ValueError(f"pool {name!r} is already declared")
        if self._open and kind == "process":
            raise RuntimeError(
                f"pool {name!r}: declare process pools before the app starts serving "
                "(their workers are opened with the app)"
            )
        pool = Pool(name, kind=kind, size=size, max_tasks_per_child=max_tasks_per_child)
        self._pools[name] = pool
        return pool

    def get(self, name: str) -> Pool:
        """The pool called ``name``; ``ValueError`` naming the declared ones if none is."""
        try:
            return self._pools[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._pools) or "none"
            raise ValueError(
                f"unknown pool {name!r} (declared: {known}); declare it before the routes "
                f"that use it: app.pool({name!r}, kind='thread' or 'process', size=N)"
            ) from None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Open every process pool for the block (``App.serve`` wraps its nursery)."""
        async with AsyncExitStack() as stack:
            for pool in list(self._pools.values()):
                await stack.enter_async_context(pool.open())
            self._open = True
            try:
                yield
            finally:
                self._open = False

    def collect(self) -> Iterator[Metric]:
        """The pools' metric families, for ``app.metrics`` (a ``MetricsSource``)."""
        labels = ["pool", "kind"]
        size = GaugeMetricFamily(
            "trioworker_pool_size", "Calls a pool runs at once.", labels=labels
        )
        busy = GaugeMetricFamily(
            "trioworker_pool_busy", "Handler calls running in a pool now.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "trioworker_pool_waiting", "Handler calls waiting for a free slot.", labels=labels
        )
        calls = CounterMetricFamily(
            "trioworker_pool_calls", "Handler calls started in a pool.", labels=labels
        )
        workers = GaugeMetricFamily(
            "trioworker_pool_workers", "Live worker processes of a process pool.", labels=["pool"]
        )
        crashes = CounterMetricFamily(
            "trioworker_pool_worker_crashes",
            "Calls whose worker process died (os._exit, segfault, OOM kill).",
            labels=["pool"],
        )
        for pool in self._pools.values():
            key = [pool.name, pool.kind]
            size.add_metric(key, pool.size)
            busy.add_metric(key, pool.busy)
            waiting.add_metric(key, pool.waiting)
            calls.add_metric(key, pool.calls)
            if pool.kind == "process":
                workers.add_metric([pool.name], pool.workers)
                crashes.add_metric([pool.name], pool.crashes)
        yield from (size, busy, waiting, calls, workers, crashes)
