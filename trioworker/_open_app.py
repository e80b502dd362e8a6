"""``open_app``: an app run inside an existing trio program, for the duration of a block.

Apart from :class:`~trioworker.App` because it is a way of *using* an app (tests, a program
that owns its trio run), not part of what an app is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._app import App

__all__ = ["open_app"]


@asynccontextmanager
async def open_app(app: App | None = None, **kwargs: Any) -> AsyncIterator[App]:
    """Run an app inside an existing trio program for the duration of a block.

    ``async with trioworker.open_app(amqp_url=...) as app:`` — the app is started (hooks run,
    the broker connection open if the app uses one, docs/amqp.md) when the block begins;
    routes registered inside the block start at once; leaving the block shuts the app down
    gracefully. Signals are left alone.
    """
    if app is None:
        app = App(**kwargs)
    elif kwargs:
        raise TypeError("pass either an App or App arguments, not both")

    async def serve(task_status: trio.TaskStatus[App]) -> None:
        await app.serve(install_signal_handlers=False, task_status=task_status)

    # Errors are re-raised after the nursery closed so they reach the caller unwrapped.
    start_error: BaseException | None = None
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(serve)
        except BaseException as exc:
            start_error = exc
        else:
            try:
                yield app
            except BaseException as exc:
                body_error = exc
            finally:
                app.shutdown()
    if start_error is not None:
        raise start_error
    if body_error is not None:
        raise body_error
