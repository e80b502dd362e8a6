"""Unit tests of route templates and resolution (no server)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from trioworker.http._routing import Router, compile_template


async def _endpoint(request: Any) -> None:
    return None


def _router(*routes: tuple[str, str]) -> Router:
    router = Router()
    for methods, template in routes:
        router.add(frozenset(methods.split(",")), template, _endpoint)
    return router


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/", "/", {}),
        ("/items", "/items", {}),
        ("/items/{id}", "/items/abc", {"id": "abc"}),
        ("/items/{id:int}", "/items/42", {"id": 42}),
        ("/price/{p:float}", "/price/3.5", {"p": 3.5}),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        (
            "/u/{u:uuid}",
            "/u/12345678-1234-5678-1234-567812345678",
            {"u": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
        ("/a/{x}/b/{y:int}", "/a/one/b/2", {"x": "one", "y": 2}),
        ("/v1.0/{name}", "/v1.0/x", {"name": "x"}),
    ],
)
def test_templates_match_and_convert(template: str, path: str, params: dict[str, Any]) -> None:
    found = _router(("GET", template)).resolve("GET", path)
    assert found.route is not None and found.route.template == template
    assert found.params == params
    assert all(type(found.params[k]) is type(v) for k, v in params.items())


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/items", "/items/"),  # no silent trailing-slash equivalence
        ("/items/{id}", "/items/a/b"),  # str does not cross a slash
        ("/items/{id}", "/items/"),  # nor match nothing
        ("/items/{id:int}", "/items/x1"),
        ("/items/{id:int}", "/items/-1"),
        ("/price/{p:float}", "/price/1e5"),
        ("/u/{u:uuid}", "/u/not-a-uuid"),
        ("/v1.0/{name}", "/v100/x"),  # a dot in a template is literal
    ],
)
def test_templates_refuse(template: str, path: str) -> None:
    found = _router(("GET", template)).resolve("GET", path)
    assert found.route is None and not found.allowed


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("items", "must start with '/'"),
        ("/items/{id:number}", "unknown converter 'number'"),
        ("/items/{id}/{id}", "appears twice"),
        ("/items/{1x}", "not a valid parameter name"),
        ("/items/{id", "unbalanced"),
        ("/items/id}", "unbalanced"),
    ],
)
def test_bad_templates_fail_at_registration(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_template(template)


def test_unknown_method_on_a_known_path_lists_allowed_methods() -> None:
    router = _router(("GET", "/items/{id}"), ("DELETE", "/items/{id}"), ("POST", "/items"))
    found = router.resolve("PUT", "/items/3")
    assert found.route is None
    assert found.allowed == {"GET", "HEAD", "DELETE"}


def test_first_registered_route_wins() -> None:
    router = _router(("GET", "/items/special"), ("GET", "/items/{id}"))
    assert router.resolve("GET", "/items/special").route is router.routes[0]
    assert router.resolve("GET", "/items/7").route is router.routes[1]


def test_a_method_routed_elsewhere_is_not_a_405() -> None:
    # POST /items/special exists, GET /items/{id} also matches that path: GET is served.
    router = _router(("POST", "/items/special"), ("GET", "/items/{id}"))
    found = router.resolve("GET", "/items/special")
    assert found.route is router.routes[1] and found.params == {"id": "special"}


def test_head_falls_back_to_get_unless_routed() -> None:
    router = _router(("GET", "/a"), ("GET", "/b"), ("HEAD", "/b"))
    assert router.resolve("HEAD", "/a").route is router.routes[0]
    assert router.resolve("HEAD", "/b").route is router.routes[2]
    assert router.resolve("HEAD", "/c").route is None


def test_same_method_and_template_twice_is_refused() -> None:
    router = _router(("GET,POST", "/items"))
    with pytest.raises(ValueError, match="POST /items is already routed"):
        router.add(frozenset({"POST"}), "/items", _endpoint)
    router.add(frozenset({"PUT"}), "/items", _endpoint)  # another method is fine


@pytest.mark.parametrize("method", ["get", "", "GE T"])
def test_method_names_are_checked(method: str) -> None:
    with pytest.raises(ValueError, match="not an HTTP method"):
        Router().add(frozenset({method}), "/x", _endpoint)
