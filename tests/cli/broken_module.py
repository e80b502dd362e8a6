"""A module that fails while it is imported (the CLI must show the cause in one line)."""

from __future__ import annotations

app = undefined_name  # type: ignore[name-defined]  # noqa: F821
