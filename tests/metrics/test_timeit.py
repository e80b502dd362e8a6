"""Timeit: time a block or a coroutine function and hand the result to a callback."""

from __future__ import annotations

import types
from typing import Any

import pytest
import trio

from trioworker import Timeit


class Reports:
    """A callback (sync or async) recording every report it gets."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def sync(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    async def async_(self, **kwargs: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(kwargs)


@pytest.fixture(params=["sync", "async"])
def reports_and_callback(request: pytest.FixtureRequest) -> tuple[Reports, Any]:
    reports = Reports()
    return reports, reports.sync if request.param == "sync" else reports.async_


async def test_context_manager_reports_name_and_duration(
    reports_and_callback: tuple[Reports, Any],
) -> None:
    reports, callback = reports_and_callback
    async with Timeit("db-write", callback) as timer:
        await trio.sleep(0.05)
    assert len(reports.calls) == 1
    call = reports.calls[0]
    assert call["name"] == "db-write"
    assert 0.04 <= call["seconds"] < 5
    assert call["seconds"] == timer.seconds
    assert call["exc_type"] is None
    assert call["exc_val"] is None
    assert call["exc_tb"] is None
    assert call["transactions"] == {"db-write": call["seconds"]}


async def test_decorator_times_each_call_and_returns_the_result(
    reports_and_callback: tuple[Reports, Any],
) -> None:
    reports, callback = reports_and_callback

    @Timeit("handler", callback)
    async def handle(x: int, *, y: int) -> int:
        await trio.sleep(0.02)
        return x + y

    assert handle.__name__ == "handle"
    assert await handle(1, y=2) == 3
    assert await handle(3, y=4) == 7  # a fresh measurement each call: no duplicate name
    assert [c["name"] for c in reports.calls] == ["handler", "handler"]
    assert all(c["seconds"] >= 0.015 for c in reports.calls)


async def test_exception_propagates_and_the_callback_gets_the_exception_info(
    reports_and_callback: tuple[Reports, Any],
) -> None:
    reports, callback = reports_and_callback
    error = KeyError("missing")
    with pytest.raises(KeyError) as raised:
        async with Timeit("failing", callback):
            raise error
    assert raised.value is error
    call = reports.calls[0]
    assert call["exc_type"] is KeyError
    assert call["exc_val"] is error
    assert isinstance(call["exc_tb"], types.TracebackType)


async def test_decorated_function_exception_propagates_and_is_reported(
    reports_and_callback: tuple[Reports, Any],
) -> None:
    reports, callback = reports_and_callback

    @Timeit("broken", callback)
    async def broken() -> None:
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError, match="nope"):
        await broken()
    assert [c["exc_type"] for c in reports.calls] == [RuntimeError]


async def test_child_timers_share_the_transactions_of_their_root() -> None:
    reports = Reports()
    root = Timeit("request", reports.sync)
    async with root:
        async with root(name="parse"):
            await trio.sleep(0.01)
        async with root(name="store"):
            await trio.sleep(0.01)
    names = [c["name"] for c in reports.calls]
    assert names == ["parse", "store", "request"]
    transactions = reports.calls[-1]["transactions"]
    assert set(transactions) == {"parse", "store", "request"}
    # Every report carries the same, shared dict.
    assert all(c["transactions"] is transactions for c in reports.calls)
    assert transactions["request"] >= transactions["parse"] + transactions["store"]


async def test_measuring_a_name_twice_under_one_root_raises() -> None:
    root = Timeit("request")
    async with root(name="step"):
        pass
    with pytest.raises(ValueError, match="step"):
        async with root(name="step"):
            pass
    with pytest.raises(ValueError, match="request"):
        async with root, root(name="request"):
            pass


async def test_without_callback_it_still_measures() -> None:
    timer = Timeit("plain")
    assert timer.seconds is None
    async with timer:
        await trio.sleep(0.01)
    assert timer.seconds is not None
    assert timer.seconds >= 0.005


def test_calling_without_a_function_or_name_is_an_error() -> None:
    with pytest.raises(ValueError):
        Timeit("x")()
