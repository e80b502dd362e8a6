"""The package's import graph follows the layering rules of docs/architecture.md.

The graph is read from the source with :mod:`ast` (nothing is imported), ``TYPE_CHECKING``
and function-level imports included: a cycle hidden behind ``if TYPE_CHECKING:`` or a lazy
import is still a cycle for a reader and for mypy. Each rule is checked on the real tree and,
so that the checker itself cannot silently pass, on the real tree with one forbidden edge
added.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trioworker"

Graph = Mapping[str, frozenset[str]]


def _modules(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _imports(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The trioworker modules ``name`` imports, anywhere in its source."""
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.split(".")[0] == "trioworker")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "trioworker":
                continue
            for alias in node.names:
                # ``from . import _frames`` imports a module; ``from .x import Y`` a name.
                submodule = f"{target}.{alias.name}"
                targets.add(submodule if submodule in known else target)
    return targets


def import_graph(root: Path = PACKAGE) -> dict[str, frozenset[str]]:
    modules = _modules(root)
    known = set(modules)
    return {
        name: frozenset(_imports(name, path, is_package, known))
        for name, (path, is_package) in modules.items()
    }


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


#: Library packages: usable without the framework. Each may import itself and these only.
LIBRARIES = {
    "trioworker.amqp": ("trioworker.amqp", "trioworker.codecs", "trioworker._version"),
    "trioworker.sse": ("trioworker.sse",),
    "trioworker.http": ("trioworker.http",),
}
#: The sans-IO core: no I/O, no clock, no trio, nothing of the trio layer around it.
SANS_IO = "trioworker.amqp.protocol"
SANS_IO_FORBIDDEN_STDLIB = {"trio", "socket", "ssl", "time", "asyncio", "select", "selectors"}
#: Who may import the app module at all (``_open_app`` is the other way to run an app).
APP_IMPORTERS = ("trioworker", "trioworker._open_app", "trioworker.cli", "trioworker.__main__")
#: The shared pipeline knows no backend and no app.
PIPELINE_FORBIDDEN = ("trioworker.backends", "trioworker._app", "trioworker.amqp")
#: The in-memory broker is a server for the library's client, not part of the framework:
#: it imports the library (and itself) only, so the AMQP backend may run it for
#: ``memory://`` URLs without an import cycle.
BROKER = "trioworker.testing._broker"
BROKER_ALLOWED = (BROKER, "trioworker.amqp", "trioworker._version")


def violations(graph: Graph) -> Iterator[str]:
    for module, targets in graph.items():
        for target in targets:
            for library, allowed in LIBRARIES.items():
                if _within(module, library) and not any(_within(target, a) for a in allowed):
                    yield f"{module} -> {target}: library {library} imports the framework"
            if _within(module, SANS_IO) and not _within(target, SANS_IO):
                yield f"{module} -> {target}: the sans-IO core imports outside itself"
            if target == "trioworker._app" and not any(
                module == m or (_within(module, m) and m != "trioworker") for m in APP_IMPORTERS
            ):
                yield f"{module} -> {target}: only __init__ and the CLI import _app"
            if _within(module, "trioworker.pipeline") and any(
                _within(target, f) for f in PIPELINE_FORBIDDEN
            ):
                yield f"{module} -> {target}: the pipeline imports a backend or the app"
            if _within(module, "trioworker.metrics") and _within(target, "trioworker.backends"):
                yield f"{module} -> {target}: metrics read backends through their sources"
            if _within(module, BROKER) and not any(_within(target, a) for a in BROKER_ALLOWED):
                yield f"{module} -> {target}: the memory broker imports beyond the library"
    yield from (f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))


def cycles(graph: Graph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _stdlib_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_import_graph_follows_the_layering_rules() -> None:
    assert list(violations(import_graph())) == []


def test_the_sans_io_core_imports_no_io_and_no_clock() -> None:
    bad = {
        name: sorted(_stdlib_imports(path) & SANS_IO_FORBIDDEN_STDLIB)
        for name, (path, _) in _modules().items()
        if _within(name, SANS_IO) and _stdlib_imports(path) & SANS_IO_FORBIDDEN_STDLIB
    }
    assert bad == {}


@pytest.mark.parametrize(
    ("module", "target", "rule"),
    [
        ("trioworker.amqp._channel", "trioworker.backends.amqp", "library"),
        ("trioworker.sse._parser", "trioworker.pipeline", "library"),
        ("trioworker.http._request", "trioworker._app", "library"),
        ("trioworker.amqp.protocol._frames", "trioworker.amqp._url", "sans-IO"),
        ("trioworker.backends.timers", "trioworker._app", "_app"),
        ("trioworker.pipeline._batcher", "trioworker.backends.amqp", "pipeline"),
        ("trioworker.metrics._collector", "trioworker.backends.sse", "metrics"),
        ("trioworker.testing._broker._queue", "trioworker.backends.amqp", "broker"),
        ("trioworker.amqp._connect", "trioworker.testing._broker", "library"),
        ("trioworker.pipeline._backend", "trioworker.pipeline._handlers", "cycle"),
    ],
)
def test_a_forbidden_edge_is_reported(module: str, target: str, rule: str) -> None:
    real = import_graph()
    graph = dict(real)
    assert module in graph and target in graph, "the example names a module that moved"
    graph[module] = graph[module] | {target}
    if rule == "cycle":  # make the edge close a loop: the target imports the module back
        graph[target] = graph[target] | {module}
    new = set(violations(graph)) - set(violations(real))
    assert new, f"adding {module} -> {target} broke no rule"
    assert all(module in v and target in v for v in new)


def test_no_module_is_over_about_400_lines() -> None:
    # "about": a module may run a little over while it holds one concept; far over, it
    # holds two and should be split.
    sizes = {name: len(path.read_text().splitlines()) for name, (path, _) in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > 430} == {}


def test_public_names_only_in_dunder_all() -> None:
    private = {}
    for name, (path, _) in _modules().items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                and isinstance(node.value, ast.List | ast.Tuple)
            ):
                names = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
                bad = [n for n in names if n.startswith("_") and n != "__version__"]
                if bad:
                    private[name] = bad
    assert private == {}


def test_importing_trioworker_does_not_load_the_http_server_or_client() -> None:
    # hypercorn, h11, h2 and wsproto are a fifth of the import, httpx (SSE's client) a
    # twentieth: a worker without HTTP or SSE routes (and every process-pool child) would
    # pay for them at each start.
    server = "{'hypercorn', 'h11', 'h2', 'wsproto', 'httpx'}"
    code = f"import sys, trioworker; print(sorted({server} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
