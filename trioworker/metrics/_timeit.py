"""``Timeit``: time a block or a coroutine function and report it, as in asyncworker."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

TimeitCallback = Callable[..., Any]


class Timeit:
    """Measure how long something takes and give the result to ``callback``.

    As an async context manager::

        async with Timeit("db-write", report):
            await db.write(rows)

    or as a decorator of a coroutine function (``@Timeit("handler", report)``). The callback
    (sync or async) is called with keyword arguments ``name``, ``seconds``, ``exc_type``,
    ``exc_val``, ``exc_tb`` and — for asyncworker compatibility — ``transactions``, a dict
    of every name measured under the same root (``timeit(name="child")`` makes a child timer
    sharing it). The callback runs even when the block raises; the exception propagates.
    """

    def __init__(self, name: str, callback: TimeitCallback | None = None) -> None:
        self.name = name
        self.callback = callback
        self.start: float | None = None
        self.finish: float | None = None
        self._transactions: dict[str, float] = {}

    @overload
    def __call__(self, coro: F) -> F: ...

    @overload
    def __call__(self, coro: None = None, *, name: str) -> Timeit: ...

    def __call__(self, coro: F | None = None, *, name: str | None = None) -> F | Timeit:
        if name is not None:
            child = Timeit(name, self.callback)
            child._transactions = self._transactions
            return child
        if coro is None:
            raise ValueError("Timeit(...) decorates a coroutine function, or give name=")

        @functools.wraps(coro)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            async with Timeit(self.name, self.callback):
                return await coro(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    @property
    def seconds(self) -> float | None:
        """The measured duration, once the block is done."""
        if self.start is None or self.finish is None:
            return None
        return self.finish - self.start

    async def __aenter__(self) -> Timeit:
        self.start = time.perf_counter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.finish = time.perf_counter()
        assert self.start is not None
        seconds = self.finish - self.start
        if self.name in self._transactions:
            raise ValueError(f"a transaction named {self.name!r} was already measured")
        self._transactions[self.name] = seconds
        if self.callback is not None:
            result = self.callback(
                name=self.name,
                seconds=seconds,
                transactions=self._transactions,
                exc_type=exc_type,
                exc_val=exc_val,
                exc_tb=exc_tb,
            )
            if inspect.isawaitable(result):
                await result
