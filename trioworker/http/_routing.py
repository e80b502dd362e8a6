"""Route templates (``/items/{id:int}``) and the table that resolves a request to a route.

Resolution distinguishes three outcomes because HTTP does: a path no route knows is a 404,
a path some route knows but not for this method is a 405 whose ``Allow`` header lists the
methods that would work, and otherwise the first route registered for (method, path) wins.
``HEAD`` falls back to the ``GET`` route of the path (RFC 9110 §9.3.2: a HEAD response is
the GET response without its body), unless a ``HEAD`` route was registered explicitly.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CONVERTERS", "Converter", "Resolution", "Route", "Router", "compile_template"]

Endpoint = Callable[[Any], Awaitable[Any]]

#: The methods the decorators know. Others can still be routed with ``route(methods=...)``.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclasses.dataclass(frozen=True)
class Converter:
    """How a ``{name:kind}`` segment matches (``regex``) and what it becomes (``convert``)."""

    regex: str
    convert: Callable[[str], Any]


#: Starlette's converter names, so templates read the same.
CONVERTERS: dict[str, Converter] = {
    "str": Converter(r"[^/]+", str),
    "int": Converter(r"[0-9]+", int),
    "float": Converter(r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID
    ),
    "path": Converter(r".*", str),
}

_PARAM = re.compile(r"{([^{}]*)}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def compile_template(template: str) -> tuple[re.Pattern[str], dict[str, Converter]]:
    """Turn ``/items/{id:int}`` into an anchored regex and the converter of each parameter.

    Mistakes in a template (no leading slash, unknown converter, a parameter named twice,
    stray braces) raise ``ValueError`` at registration, where the traceback points at the
    decorator, instead of turning into 404s at request time.
    """
    if not isinstance(template, str) or not template.startswith("/"):
        raise ValueError(f"a route path must start with '/', got {template!r}")
    pattern = ["^"]
    converters: dict[str, Converter] = {}
    position = 0
    for param in _PARAM.finditer(template):
        literal = template[position : param.start()]
        _check_literal(template, literal)
        pattern.append(re.escape(literal))
        name, _, kind = param.group(1).partition(":")
        name, kind = name.strip(), kind.strip() or "str"
        if not _NAME.match(name):
            raise ValueError(f"route {template!r}: {name!r} is not a valid parameter name")
        if name in converters:
            raise ValueError(f"route {template!r}: parameter {name!r} appears twice")
        converter = CONVERTERS.get(kind)
        if converter is None:
            known = ", ".join(sorted(CONVERTERS))
            raise ValueError(f"route {template!r}: unknown converter {kind!r} (known: {known})")
        converters[name] = converter
        pattern.append(f"(?P<{name}>{converter.regex})")
        position = param.end()
    literal = template[position:]
    _check_literal(template, literal)
    pattern.append(re.escape(literal))
    pattern.append(r"\Z")
    return re.compile("".join(pattern)), converters


def _check_literal(template: str, literal: str) -> None:
    if "{" in literal or "}" in literal:
        raise ValueError(f"route {template!r}: unbalanced '{{' or '}}'")


@dataclasses.dataclass(eq=False)
class Route:
    """One registered (methods, template) pair and the endpoint that answers it."""

    template: str
    methods: frozenset[str]
    endpoint: Endpoint
    name: str
    regex: re.Pattern[str] = dataclasses.field(init=False, repr=False)
    converters: dict[str, Converter] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.regex, self.converters = compile_template(self.template)

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters if ``path`` matches this route, else None."""
        found = self.regex.match(path)
        if found is None:
            return None
        params: dict[str, Any] = {}
        for name, raw in found.groupdict().items():
            try:
                params[name] = self.converters[name].convert(raw)
            except ValueError:
                return None  # e.g. a float too odd for float(): treat as no match
        return params


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What the router found: a route and its parameters, or the methods ``path`` allows.

    ``route is None and not allowed`` → 404; ``route is None and allowed`` → 405.
    """

    route: Route | None
    params: dict[str, Any]
    allowed: frozenset[str]


class Router:
    """Routes in registration order; the first match for (method, path) wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, methods: frozenset[str], template: str, endpoint: Endpoint, *, name: str = ""
    ) -> Route:
        """Register a route; the same method on the same template twice is a ``ValueError``."""
        if not methods:
            raise ValueError("a route needs at least one method")
        for method in methods:
            if not method or method != method.upper() or not method.isalpha():
                raise ValueError(f"{method!r} is not an HTTP method name (use upper case)")
        route = Route(template, methods, endpoint, name or template)
        for existing in self.routes:
            clash = existing.methods & methods
            if existing.template == template and clash:
                raise ValueError(
                    f"{', '.join(sorted(clash))} {template} is already routed to {existing.name}"
                )
        self.routes.append(route)
        return route

    def resolve(self, method: str, path: str) -> Resolution:
        allowed: set[str] = set()
        head_fallback: tuple[Route, dict[str, Any]] | None = None
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if method in route.methods:
                return Resolution(route, params, frozenset())
            if method == "HEAD" and "GET" in route.methods and head_fallback is None:
                head_fallback = (route, params)
            allowed |= route.methods
        if head_fallback is not None:
            return Resolution(head_fallback[0], head_fallback[1], frozenset())
        if "GET" in allowed:
            allowed.add("HEAD")
        return Resolution(None, {}, frozenset(allowed))
