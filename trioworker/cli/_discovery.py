"""Find the App a command line names: ``MODULE:ATTR``, optionally through a factory.

Every way this can go wrong is the user's configuration, not our bug, so each becomes one
:class:`DiscoveryError` line that says what to fix — never a traceback through importlib.
For an exception raised *inside* the user's module we keep its type, message and the
file/line where it happened: that is the one line of the traceback that matters.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from .._app import App

__all__ = ["DiscoveryError", "load_app", "parse_target"]


class DiscoveryError(Exception):
    """The app could not be found or built; the message is one line for the user."""


def parse_target(target: str) -> tuple[str, str]:
    """``"pkg.mod:obj.app"`` -> ``("pkg.mod", "obj.app")``."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise DiscoveryError(f"{target!r} is not MODULE:ATTR (for example myservice:app)")
    if not all(part.isidentifier() for part in (*module.split("."), *attr.split("."))):
        raise DiscoveryError(f"{target!r} is not MODULE:ATTR (for example myservice:app)")
    return module, attr


def _where(exc: BaseException) -> str:
    """`` (file.py, line 3)`` of the innermost frame, or of a SyntaxError's location."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" ({last.filename}, line {last.lineno})"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _short(obj: object) -> str:
    name = getattr(obj, "__qualname__", None)
    text = name if isinstance(name, str) else repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_missing(exc: ModuleNotFoundError, module: str) -> bool:
    """True if ``module`` itself (or a parent package) does not exist — as opposed to the
    module existing and importing something that does not."""
    parts = module.split(".")
    return exc.name in {".".join(parts[: i + 1]) for i in range(len(parts))}


def import_module(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if _is_missing(exc, module):
            raise DiscoveryError(
                f"cannot import {module!r}: no module named {exc.name!r} "
                f"(searched the app dir {sys.path[0]!r}; see --app-dir)"
            ) from None
        raise DiscoveryError(f"error importing {module!r}: {_one_line(exc)}{_where(exc)}") from None
    except Exception as exc:  # the user's module raised while it was being imported
        raise DiscoveryError(f"error importing {module!r}: {_one_line(exc)}{_where(exc)}") from None


def load_app(target: str, *, factory: bool = False, app_dir: str | None = None) -> App:
    """Import ``MODULE``, look up ``ATTR`` (dotted), call it if ``factory``; must be an App.

    ``app_dir`` (default: the current directory) goes first on ``sys.path``, as
    ``python -m`` does for the current directory, so ``trioworker run service:app`` finds
    ``./service.py`` even through the console script.
    """
    module_name, attr = parse_target(target)
    directory = os.path.abspath(app_dir if app_dir is not None else os.getcwd())
    if directory not in sys.path[:1]:
        sys.path.insert(0, directory)
    obj: Any = import_module(module_name)
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise DiscoveryError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if not callable(obj):
            raise DiscoveryError(
                f"{target!r} is not callable but {type(obj).__name__} {_short(obj)} "
                "(--factory was given)"
            )
        try:
            obj = obj()
        except Exception as exc:
            raise DiscoveryError(
                f"factory {target!r} failed: {_one_line(exc)}{_where(exc)}"
            ) from None
        what = f"factory {target!r} returned"
    else:
        what = f"{target!r} is"
    if not isinstance(obj, App):
        hint = "; use --factory if it returns one" if callable(obj) and not factory else ""
        raise DiscoveryError(
            f"{what} not a trioworker.App but {type(obj).__name__} {_short(obj)}{hint}"
        )
    return obj
