"""RPC over a WebSocket in micro_framework's JSON (its ``WebSocketEntrypoint``).

A request is a text (or binary) message ``{"command": name, "command_args": [...],
"command_kwargs": {...}}``; the answer is one text message ``{"data": result,
"exception": null}``, or ``{"data": null, "exception": {"exception": class name,
"message": str(exc), "args": [...], "kwargs": {...}, "module": module}}`` — what
micro_framework's ``format_rpc_response`` builds and its ``parse_rpc_response`` turns back
into an exception. Its two built-in commands are answered too: ``__list_targets__`` (every
function: ``{"target", "args", "kwargs", "docstring"}``, which micro_framework's
``RPCProxy`` reads first) and ``__get_target__`` (one of them).

Requests on one connection are answered one at a time, in order: a client that pipelines
requests gets the answers in the order it sent them, and a slow call slows that client
only (its socket stops being read), not the others.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

__all__ = ["RPCFunctions", "RPCMalformedMessage", "RPCTargetDoesNotExist"]

log = logging.getLogger("trioworker.http")

_BUILTINS = ("__list_targets__", "__get_target__")


class RPCMalformedMessage(Exception):
    """The request is not ``{"command": str, "command_args": list, "command_kwargs":
    dict}`` JSON (micro_framework's exception of the same name)."""


class RPCTargetDoesNotExist(Exception):
    """No function of that name is exposed (micro_framework's exception of the same name)."""


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def exception_data(exc: BaseException) -> dict[str, Any]:
    """The ``exception`` member for ``exc``; ``__getargs__``/``__getkwargs__`` are
    micro_framework's hooks for exceptions that rebuild from other arguments."""
    get_args = getattr(exc, "__getargs__", None)
    get_kwargs = getattr(exc, "__getkwargs__", None)
    args = get_args() if callable(get_args) else exc.args
    kwargs = (get_kwargs() if callable(get_kwargs) else None) or {}
    return {
        "exception": type(exc).__name__,
        "message": str(exc),
        "args": [_json_safe(arg) for arg in args],
        "kwargs": {str(k): _json_safe(v) for k, v in dict(kwargs).items()},
        "module": type(exc).__module__,
    }


def format_response(data: Any, exception: BaseException | None = None) -> str:
    """One answer, as JSON text; a result JSON cannot encode becomes a ``TypeError``."""
    if exception is not None:
        return json.dumps({"data": None, "exception": exception_data(exception)})
    try:
        return json.dumps({"data": data, "exception": None})
    except (TypeError, ValueError) as exc:
        error = TypeError(f"the result is not JSON serializable: {exc}")
        return json.dumps({"data": None, "exception": exception_data(error)})


def parse_command(message: str | bytes) -> tuple[str, list[Any], dict[str, Any]]:
    """``(command, args, kwargs)`` of a request; :class:`RPCMalformedMessage` if it is not
    one."""
    try:
        request = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RPCMalformedMessage(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise RPCMalformedMessage('the request must be a JSON object with a "command" string')
    args = request.get("command_args") or []
    kwargs = request.get("command_kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise RPCMalformedMessage('"command_args" must be a list and "command_kwargs" an object')
    return request["command"], args, kwargs


def target_detail(name: str, function: Callable[..., Any]) -> dict[str, Any]:
    """micro_framework's description of a target: required positional parameters in
    ``args``, the others (defaulted, keyword-only, ``**kwargs``) in ``kwargs``."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return {"target": name, "args": [], "kwargs": [], "docstring": inspect.getdoc(function)}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    args = [
        p.name
        for p in params
        if (p.kind in positional and p.default is p.empty) or p.kind is p.VAR_POSITIONAL
    ]
    kwargs = [
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)
        or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
    ]
    return {"target": name, "args": args, "kwargs": kwargs, "docstring": inspect.getdoc(function)}


def _is_async(function: Callable[..., Any]) -> bool:
    target = function
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - callable objects
    )


class RPCFunctions:
    """The functions an RPC endpoint exposes, by name, and how a request calls them.

    ``functions``: a mapping name → function, or functions (named by ``__name__``). An
    ``async def`` is awaited; a plain ``def`` runs in a worker thread, so a blocking call
    does not stall the event loop.
    """

    def __init__(
        self, functions: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]
    ) -> None:
        items = (
            functions.items()
            if isinstance(functions, Mapping)
            else ((getattr(f, "__name__", ""), f) for f in functions)
        )
        self.functions: dict[str, Callable[..., Any]] = {}
        for name, function in items:
            if not isinstance(name, str) or not name or name in _BUILTINS:
                raise ValueError(f"{name!r} cannot name an RPC function")
            if not callable(function):
                raise TypeError(f"RPC function {name!r} is not callable: {function!r}")
            if name in self.functions:
                raise ValueError(f"two RPC functions are named {name!r}")
            self.functions[name] = function
        if not self.functions:
            raise ValueError("an RPC endpoint needs at least one function")

    async def answer(self, message: str | bytes) -> str:
        """The JSON answer to one request (never raises for a bad request or a failing
        function: the exception goes back to the caller)."""
        try:
            command, args, kwargs = parse_command(message)
            return format_response(await self.call(command, args, kwargs))
        except Exception as exc:
            return format_response(None, exc)

    async def call(self, command: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run ``command``: a built-in one, or the exposed function of that name."""
        if command == "__list_targets__":
            return [target_detail(name, fn) for name, fn in self.functions.items()]
        if command == "__get_target__":
            name = args[0] if args else kwargs.get("target")
            if name not in self.functions:
                raise RPCTargetDoesNotExist(f"{name} does not exist or is not exposed")
            return target_detail(name, self.functions[name])
        function = self.functions.get(command)
        if function is None:
            raise RPCTargetDoesNotExist(
                f"{command} does not exist or is not exposed through a RPC method."
            )
        try:
            if _is_async(function):
                return await function(*args, **kwargs)
            call = functools.partial(function, *args, **kwargs)
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        except Exception:
            log.exception("WebSocket RPC function %r raised", command)
            raise
