"""Typed bodies: a handler parameter annotated with a dataclass or a pydantic model.

``async def add(request: AddRequest)`` gets the decoded body validated into an
``AddRequest``; ``async def handle(orders: list[Order])`` gets one ``Order`` per message.
A body that does not validate can never succeed: its message is rejected without requeue
(dead-lettered where the queue has a DLX) with a log line saying why — never redelivered in
a loop.

A second parameter annotated ``Message`` (RPC routes) or ``list[Message]`` (consume
routes, one per model, in the same order) gives the handler the messages too — their
properties, headers and per-message decisions: ``async def add(request: AddRequest,
message: Message)``.

pydantic is optional (``pip install trioworker[pydantic]``): it is only imported when a
handler is annotated with a model, and recognised by its ``model_validate`` classmethod.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from ._message import Message

__all__ = ["BodyType", "InvalidBody", "body_type", "wants_messages"]


class InvalidBody(ValueError):
    """The decoded body does not validate into the handler's annotated type."""


class BodyType:
    """How to turn a decoded body into the annotated type; ``many`` for ``list[T]``."""

    __slots__ = ("build", "many", "type", "with_messages")

    def __init__(
        self,
        type_: type[Any],
        build: Callable[[Any], Any],
        many: bool,
        with_messages: bool = False,
    ) -> None:
        self.type = type_
        self.build = build
        self.many = many
        #: The handler's second parameter asks for the message(s) too.
        self.with_messages = with_messages

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
    """The typed body the handler's first parameter asks for, or ``None`` (plain messages).

    Raises ``TypeError`` if that parameter's annotation cannot be resolved (see
    :func:`_first_annotation`): guessing "untyped" would hand the handler messages
    where it expects models.
    """
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    annotation = _first_annotation(handler, params[0])
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
    return BodyType(annotation, build, many, wants_messages(handler, params, many=many))


def wants_messages(
    handler: Callable[..., Any], params: list[inspect.Parameter], *, many: bool
) -> bool:
    """Whether the typed handler's second parameter is annotated ``Message`` (one body)
    or ``list[Message]`` (``many``); ``TypeError`` for the other spelling, which would
    hand it the wrong thing."""
    if len(params) < 2 or params[1].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    annotation = _first_annotation(handler, params[1])
    if annotation is inspect.Parameter.empty:
        return False
    is_list = typing.get_origin(annotation) in (list, typing.List)  # noqa: UP006
    raw = params[1].annotation
    if isinstance(raw, str) and annotation is Message:  # resolved from the spelling alone
        is_list = raw.replace(" ", "").split("[", 1)[0].rsplit(".", 1)[-1] in ("list", "List")
    inner = typing.get_args(annotation)[0] if is_list and typing.get_args(annotation) else None
    if annotation is Message or inner is Message:
        if is_list != many:
            want = "list[Message]" if many else "Message"
            raise TypeError(
                f"handler {getattr(handler, '__qualname__', handler)!r}: its second "
                f"parameter gets the message{'s' if many else ''}: annotate it {want}"
            )
        return True
    return False


def _first_annotation(handler: Callable[..., Any], param: inspect.Parameter) -> Any:
    """The first parameter's annotation, resolved.

    Under ``from __future__ import annotations`` annotations are strings, resolved in the
    module's globals: a model defined inside a function (a test, a factory) cannot be found
    there. ``get_type_hints`` resolves every annotation at once, so when it fails this
    tries the first parameter's alone (a bad return annotation must not matter). A string
    that still does not resolve is an error — unless it names ``Message``, which a module
    may well import under ``TYPE_CHECKING`` only: that handler takes plain messages.
    """
    try:
        hints = typing.get_type_hints(handler)
    except Exception:
        pass
    else:
        return hints.get(param.name, param.annotation)
    raw = param.annotation
    if not isinstance(raw, str):
        return raw
    namespace = getattr(inspect.unwrap(handler), "__globals__", {})
    try:
        # What get_type_hints does for this one name: evaluate it in the module's globals.
        return eval(raw, dict(namespace))
    except Exception as exc:
        if _names_message(raw):
            return Message
        name = getattr(handler, "__qualname__", repr(handler))
        raise TypeError(
            f"handler {name}: cannot resolve the annotation {raw!r} of its parameter "
            f"{param.name!r} ({type(exc).__name__}: {exc}). With `from __future__ import "
            "annotations` annotations are strings resolved in the module's globals, so a "
            "model defined inside a function cannot be found: define it at module level "
            "(or drop `from __future__ import annotations` from that module)."
        ) from exc


def _names_message(annotation: str) -> bool:
    """Whether ``annotation`` reads ``Message`` or ``list[Message]`` (any spelling)."""
    try:
        node: ast.expr = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return False
    if isinstance(node, ast.Subscript):
        node = node.slice
    if isinstance(node, ast.Attribute):
        return node.attr == "Message"
    return isinstance(node, ast.Name) and node.id == "Message"
