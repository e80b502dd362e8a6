"""Named pools on their own (docs/pools.md): real worker processes, no broker.

What a pool promises whatever feeds it: calls bounded by its size, exceptions that come
back with their type and message (or a clear stand-in), a crashed worker failing only its
call and being replaced, ``max_tasks_per_child`` recycling, cancellation killing the
worker, workers gone once the pool closes, and handlers refused at registration when a
worker could not run them.
"""

from __future__ import annotations

import functools
import os
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.backends.amqp import pool_handlers
from trioworker import StartupError
from trioworker.pipeline._batcher import HandlerTimeout
from trioworker.pipeline._handlers import adapt
from trioworker.pipeline._pools import Pool, Pools
from trioworker.pipeline._processes import (
    RemoteHandlerError,
    RemoteTraceback,
    WorkerCrashedError,
    check_importable,
)


def dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def pools() -> Iterator[Pools]:
    yield Pools()


async def test_max_tasks_per_child_recycles_the_worker(pools: Pools) -> None:
    pool = pools.declare("cpu", kind="process", size=1, max_tasks_per_child=2)
    async with pools.open():
        pids = [await pool.run(pool_handlers.pid) for _ in range(5)]
    # Two calls per worker, then a fresh one.
    assert pids[0] == pids[1] and pids[2] == pids[3]
    assert len({pids[0], pids[2], pids[4]}) == 3
    assert os.getpid() not in pids
    assert all(dead(p) for p in pids)  # the pool closed: every worker is gone


async def test_exceptions_come_back_with_their_type_or_a_stand_in(pools: Pools) -> None:
    pool = pools.declare("cpu", kind="process", size=1)
    async with pools.open():
        with pytest.raises(ValueError, match="bad value 42") as plain:
            await pool.run(pool_handlers.fail, "plain")
        assert isinstance(plain.value.__cause__, RemoteTraceback)
        assert "pool_handlers.py" in plain.value.__cause__.text  # the worker's traceback

        with pytest.raises(RemoteHandlerError) as standin:
            await pool.run(pool_handlers.fail, "unpicklable")
        assert standin.value.type_name == "Unpicklable"
        assert standin.value.message == "a+b"

        # A handler's SystemExit must not stop the app that receives it.
        with pytest.raises(RemoteHandlerError, match="SystemExit"):
            await pool.run(pool_handlers.fail, "exit")
        assert pool.crashes == 0


async def test_a_crashed_worker_fails_its_call_only_and_is_replaced(pools: Pools) -> None:
    pool = pools.declare("cpu", kind="process", size=1)
    async with pools.open():
        first = await pool.run(pool_handlers.pid)
        with pytest.raises(WorkerCrashedError, match="exit code 3"):
            await pool.run(os._exit, 3)
        assert pool.crashes == 1
        second = await pool.run(pool_handlers.pid)
    assert first != second


async def test_a_timeout_kills_the_worker(pools: Pools, tmp_path: pathlib.Path) -> None:
    pool = pools.declare("cpu", kind="process", size=1)
    path = tmp_path / "pid"
    call = adapt(pool_handlers.report_pid_then_sleep, timeout=1.0, pool=pool)
    async with pools.open():
        with pytest.raises(HandlerTimeout):
            await call(str(path), 60.0)
        assert dead(int(path.read_text()))  # killed at once, not left sleeping for 60 s
        assert pool.busy == 0
        assert await pool.run(pool_handlers.pid) != int(path.read_text())


async def test_a_pool_bounds_its_calls(pools: Pools) -> None:
    pool = pools.declare("io", kind="thread", size=2)
    release = threading.Event()
    async with pools.open(), trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(pool.run, release.wait)
        with trio.fail_after(10):
            while (pool.busy, pool.waiting) != (2, 3):  # noqa: ASYNC110 - counters, no event
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert (pool.busy, pool.waiting) == (2, 3)  # still bounded
        release.set()
    assert pool.calls == 5 and pool.busy == 0


async def test_a_process_pool_runs_only_while_open(pools: Pools) -> None:
    pool = pools.declare("cpu", kind="process", size=1)
    with pytest.raises(RuntimeError, match="not running"):
        await pool.run(pool_handlers.pid)


def test_bad_declarations_are_refused(pools: Pools) -> None:
    pools.declare("cpu", kind="process", size=1)
    with pytest.raises(ValueError, match="already declared"):
        pools.declare("cpu", kind="thread")
    with pytest.raises(ValueError, match="kind must be"):
        pools.declare("x", kind="greenlet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be"):
        pools.declare("x", kind="thread", size=0)
    with pytest.raises(ValueError, match="max_tasks_per_child is for process pools"):
        pools.declare("x", kind="thread", max_tasks_per_child=10)
    with pytest.raises(ValueError, match=r"unknown pool 'gpu' \(declared: 'cpu'\)"):
        pools.get("gpu")


def _local_handler() -> Any:
    def inner(messages: list[Any]) -> None: ...

    return inner


def in_main(messages: list[Any]) -> None: ...


in_main.__module__ = "__main__"


async def async_handler(messages: list[Any]) -> None: ...


@pytest.mark.parametrize(
    ("handler", "why"),
    [
        (lambda messages: None, "a lambda has no name"),
        (_local_handler(), "defined inside a function"),
        (in_main, "defined in __main__"),
        (
            functools.partial(pool_handlers.decide, threading.Lock()),
            "partial arguments do not pickle",
        ),
    ],
)
def test_handlers_a_worker_cannot_import_are_refused(handler: Any, why: str) -> None:
    with pytest.raises(TypeError, match=why):
        check_importable(handler, "route 'r'")


def test_importable_handlers_pass() -> None:
    check_importable(pool_handlers.decide, "route 'r'")
    check_importable(functools.partial(pool_handlers.fail, "plain"), "route 'r'")


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_async_handlers_are_refused(pools: Pools, kind: Any) -> None:
    pool = pools.declare("p", kind=kind, size=1)
    with pytest.raises(TypeError, match="runs plain `def` handlers"):
        pool.check_handler(async_handler, "route 'r'")


async def test_a_name_bound_to_another_object_fails_at_open(pools: Pools) -> None:
    # Importable by its name at registration, but the module holds something else under
    # it by the time the app starts (a decorator applied after the route's).
    def handler(messages: list[Any]) -> None: ...

    handler.__module__ = pool_handlers.__name__
    handler.__qualname__ = "decide"
    pool: Pool = pools.declare("cpu", kind="process", size=1)
    pool.check_handler(handler, "route 'r'")
    with pytest.raises(StartupError, match="route 'r': its handler cannot be sent"):
        async with pools.open():
            pass  # pragma: no cover - open() refuses first


async def test_metrics(pools: Pools) -> None:
    pools.declare("io", kind="thread", size=3)
    pool = pools.declare("cpu", kind="process", size=1)
    async with pools.open():
        await pool.run(pool_handlers.pid)
        families = {f.name: f for f in pools.collect()}
        workers = families["trioworker_pool_workers"].samples
    size = {tuple(s.labels.values()): s.value for s in families["trioworker_pool_size"].samples}
    assert size == {("io", "thread"): 3, ("cpu", "process"): 1}
    calls = families["trioworker_pool_calls"].samples
    assert {(s.labels["pool"], s.value) for s in calls if s.name.endswith("_total")} == {
        ("io", 0),
        ("cpu", 1),
    }
    assert [(s.labels["pool"], s.value) for s in workers] == [("cpu", 1)]
