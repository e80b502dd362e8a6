"""``--reload``: restart the (single) worker when a Python file under the app dir changes.

Development only. It reuses the supervisor with one worker, so a reload is exactly a
graceful stop and a fresh process: no module is re-imported into a live interpreter (state,
connections and half-registered routes of the old code cannot leak into the new). A change
that breaks the import just logs the error; the next change tries again.
"""

from __future__ import annotations

import logging
import os

import trio

from ._supervisor import Supervisor

__all__ = ["ReloadUnavailable", "check_watchfiles", "run_with_reload"]

log = logging.getLogger("trioworker.reload")


class ReloadUnavailable(Exception):
    """watchfiles is not installed (it is the optional extra ``trioworker[reload]``)."""


def check_watchfiles() -> None:
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise ReloadUnavailable(
            "--reload needs the watchfiles package: pip install 'trioworker[reload]'"
        ) from None


async def run_with_reload(supervisor: Supervisor, directory: str) -> int:
    """Run ``supervisor`` and reload it on every batch of changes; its exit status."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch, supervisor, directory)
        status = await supervisor.run()
        nursery.cancel_scope.cancel()
    return status


async def _watch(supervisor: Supervisor, directory: str) -> None:
    import watchfiles

    log.info("watching %s for changes (--reload)", directory)
    async for changes in watchfiles.awatch(directory, watch_filter=watchfiles.PythonFilter()):
        names = sorted({path.removeprefix(directory + os.sep) for _, path in changes})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        log.info("%s changed: reloading", shown)
        supervisor.reload()
