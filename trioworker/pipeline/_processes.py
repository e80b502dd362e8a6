"""What crosses to a worker process of a process pool, and what comes back (docs/pools.md).

A process pool sends a handler *by reference* — pickle writes ``module`` and
``qualname``, the worker imports the module and looks the name up — and its arguments by
value. So a handler the worker cannot import is refused when the route is registered (see
:func:`check_importable`), not discovered at the first message, when the message would
fail for a mistake in the code.

What comes back is an outcome: the value the handler returned, or the exception it
raised with the worker's traceback as text. Exceptions are checked in the worker for a
pickle round trip; one that would not survive it (a custom ``__init__``, a socket in an
attribute) is replaced by :class:`RemoteHandlerError`, which keeps its type name and
message, so the parent always learns *what* failed.
"""

from __future__ import annotations

import functools
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

__all__ = [
    "RemoteHandlerError",
    "RemoteTraceback",
    "RetireAfter",
    "WorkerCrashedError",
    "call_in_worker",
    "check_importable",
    "raise_or_return",
    "travelling",
]


class RemoteHandlerError(RuntimeError):
    """A handler in a worker process raised an exception that cannot be pickled back:
    this stands in for it, with its ``type_name`` and ``message``."""

    def __init__(self, type_name: str, message: str, why: str = "") -> None:
        note = f" (the original cannot travel back from the worker: {why})" if why else ""
        super().__init__(f"{type_name}: {message}{note}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text: set as the
    ``__cause__`` of the exception re-raised in the app, so a log shows both sides."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class WorkerCrashedError(RuntimeError):
    """The worker process died while it ran the call (``os._exit``, a segfault, the OOM
    killer): only this call fails; the pool starts a new worker for the next one."""


class RetireAfter:
    """trio-parallel's ``retire=`` for ``max_tasks_per_child``: pickled once into each new
    worker, so every worker counts its own calls and asks to retire after ``limit``."""

    __slots__ = ("done", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done = 0

    def __call__(self) -> bool:
        # Runs in the worker after every call; it must never raise (trio-parallel's rule).
        self.done += 1
        return self.done >= self.limit

    def __getstate__(self) -> tuple[int, int]:
        return (self.limit, self.done)

    def __setstate__(self, state: tuple[int, int]) -> None:
        self.limit, self.done = state


class _Raised:
    """A worker-side exception ready to travel: the exception (or its stand-in) and the
    worker's traceback as text."""

    __slots__ = ("error", "traceback")

    def __init__(self, error: BaseException, text: str) -> None:
        self.error = error
        self.traceback = text

    def __getstate__(self) -> tuple[BaseException, str]:
        return (self.error, self.traceback)

    def __setstate__(self, state: tuple[BaseException, str]) -> None:
        self.error, self.traceback = state


def travelling(exc: BaseException) -> _Raised:
    """``exc`` as it can travel to the app: itself if it survives a pickle round trip,
    else a :class:`RemoteHandlerError`. ``SystemExit``/``KeyboardInterrupt`` from a
    handler become one too: they must not stop the app that receives them."""
    text = "".join(traceback.format_exception(exc))
    name = type(exc).__qualname__
    if not isinstance(exc, Exception):
        return _Raised(RemoteHandlerError(name, str(exc), "not an Exception"), text)
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception as why:
        return _Raised(RemoteHandlerError(name, str(exc), repr(why)), text)
    return _Raised(exc, text)


def call_in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in the worker; an exception comes back as a value (see
    :func:`raise_or_return`), never through trio-parallel's own pickling of it."""
    try:
        return fn(*args)
    except BaseException as exc:
        return travelling(exc)


def raise_or_return(outcome: Any) -> Any:
    """In the app: return what :func:`call_in_worker` returned, or raise what it caught
    (with the worker's traceback as its ``__cause__``)."""
    if isinstance(outcome, _Raised):
        error = outcome.error
        error.__cause__ = RemoteTraceback(outcome.traceback)
        raise error
    return outcome


def _refuse(what: str, target: object, why: str) -> TypeError:
    name = getattr(target, "__qualname__", None) or repr(target)
    return TypeError(
        f"{what}: handler {name} cannot run in a process pool: {why}. A worker process "
        "imports the handler by module and name: define it at the top level of an "
        "importable module (docs/pools.md, 'What can run in a process')"
    )


def check_importable(handler: object, what: str) -> None:
    """Refuse a handler a worker process could not import, by its qualified name (no
    pickling attempt: at registration the decorated name is not bound in its module yet).

    Lambdas, functions defined inside functions (``<locals>``) and functions of
    ``__main__`` (a script run with ``python x.py``: the worker would have to run the
    script again) are refused. A ``functools.partial`` is checked through its function,
    its arguments must pickle; a callable object through its class and its state.
    """
    if isinstance(handler, functools.partial):
        try:
            pickle.dumps((handler.args, handler.keywords))
        except Exception as exc:
            raise _refuse(what, handler, f"its partial arguments do not pickle ({exc})") from exc
        check_importable(handler.func, what)
        return
    if isinstance(handler, types.MethodType):
        check_importable(type(handler.__self__), what)
        target: object = handler.__func__
    elif isinstance(handler, types.FunctionType | types.BuiltinFunctionType | type):
        target = handler
    else:  # a callable object: its class travels by name, its state by value
        try:
            pickle.dumps(handler)
        except Exception as exc:
            raise _refuse(what, handler, f"it does not pickle ({exc})") from exc
        check_importable(type(handler), what)
        return
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname:
        raise _refuse(what, target, "it has no module and qualified name")
    if "<lambda>" in qualname:
        raise _refuse(what, target, "a lambda has no name to import")
    if "<locals>" in qualname:
        raise _refuse(what, target, "it is defined inside a function")
    if module == "__main__":
        raise _refuse(
            what,
            target,
            "it is defined in __main__ (the script or -m module being run); move it to a "
            "module the script imports",
        )
    loaded = sys.modules.get(module)
    if loaded is None or getattr(loaded, "__spec__", None) is None:
        raise _refuse(what, target, f"its module {module!r} cannot be imported by name")
