"""Typed bodies: a handler parameter annotated with a dataclass or a pydantic model.

``async def add(request: AddRequest)`` gets the decoded body validated into an
``AddRequest``; ``async def handle(orders: list[Order])`` gets one ``Order`` per message.
A body that does not validate can never succeed: its message is rejected without requeue
(dead-lettered where the queue has a DLX) with a log line saying why — never redelivered in
a loop.

pydantic is optional (``pip install trioworker[pydantic]``): it is only imported when a
handler is annotated with a model, and recognised by its ``model_validate`` classmethod.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from ._message import Message

__all__ = ["BodyType", "InvalidBody", "body_type"]


class InvalidBody(ValueError):
    """The decoded body does not validate into the handler's annotated type."""


class BodyType:
    """How to turn a decoded body into the annotated type; ``many`` for ``list[T]``."""

    __slots__ = ("build", "many", "type")

    def __init__(self, type_: type[Any], build: Callable[[Any], Any], many: bool) -> None:
        self.type = type_
        self.build = build
        self.many = many

    def validate(self, data: Any) -> Any:
        """Build the typed value from decoded ``data``; :class:`InvalidBody` if it does not fit."""
        try:
            return self.build(data)
        except InvalidBody:
            raise
        except Exception as exc:  # dataclass TypeError, pydantic ValidationError, ...
            raise InvalidBody(f"body does not validate as {self.type.__name__}: {exc}") from exc


def _dataclass_builder(cls: type[Any]) -> Callable[[Any], Any]:
    names = {f.name for f in dataclasses.fields(cls) if f.init}

    def build(data: Any) -> Any:
        if not isinstance(data, dict):
            raise InvalidBody(
                f"expected a JSON object for {cls.__name__}, got {type(data).__name__}"
            )
        unknown = set(data) - names
        if unknown:
            raise InvalidBody(f"unexpected fields for {cls.__name__}: {sorted(unknown)}")
        return cls(**data)

    return build


def _builder(type_: Any) -> Callable[[Any], Any] | None:
    if not isinstance(type_, type):
        return None
    if dataclasses.is_dataclass(type_):
        return _dataclass_builder(type_)
    validate = getattr(type_, "model_validate", None)
    if callable(validate):  # a pydantic v2 model
        return typing.cast(Callable[[Any], Any], validate)
    return None


def body_type(handler: Callable[..., Any]) -> BodyType | None:
    """The typed body the handler's first parameter asks for, or ``None`` (plain messages)."""
    target = handler
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    annotation = hints.get(params[0].name, params[0].annotation)
    if annotation is inspect.Parameter.empty or annotation is Message:
        return None
    many = False
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List):  # noqa: UP006 - also accept typing.List
        args = typing.get_args(annotation)
        if not args or args[0] is Message:
            return None
        annotation = args[0]
        many = True
    build = _builder(annotation)
    if build is None:
        return None
    return BodyType(annotation, build, many)
