"""The examples of docs/testing.md are tests of the suite: this module runs them as written.

Every ```python block of the page is compiled with the page as its file name (a failure
points at the doc's line), executed in a namespace of its own, and its ``test_*``
functions become tests of this module. A block preceded by ``<!-- not a test -->`` is left
out. So the guide cannot drift from what the toolkit does: an example that stops working
fails the suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
SKIP_MARK = "<!-- not a test -->"


def doc_blocks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, code) of each runnable ```python block of ``text``."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            skipped = i > 0 and lines[i - 1].strip() == SKIP_MARK
            start = i + 1
            end = start
            while lines[end].strip() != "```":
                end += 1
            if not skipped:
                yield start + 1, "\n".join(lines[start:end])
            i = end
        i += 1


def collect(path: Path) -> dict[str, Callable[..., Any]]:
    """The tests the page's blocks define, named ``<test>__line<N>``."""
    tests: dict[str, Callable[..., Any]] = {}
    for line, code in doc_blocks(path.read_text()):
        namespace: dict[str, Any] = {"__name__": f"docs_testing_line{line}"}
        # Padded so the code object's line numbers are the doc's.
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
        found = {k: v for k, v in namespace.items() if k.startswith("test_") and callable(v)}
        assert found, f"the example at {path.name}:{line} defines no test"
        for name, test in found.items():
            tests[f"{name}__line{line}"] = test
    return tests


globals().update(collect(DOC))


def test_every_example_of_the_guide_is_collected() -> None:
    text = DOC.read_text()
    blocks = list(doc_blocks(text))
    assert len(blocks) == text.count("```python") - text.count(SKIP_MARK)
    assert len(blocks) >= 9
    assert re.search(r"^## Contributing: the project's own tests$", text, re.MULTILINE)
