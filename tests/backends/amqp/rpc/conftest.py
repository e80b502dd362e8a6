"""Fixtures for the RPC and codec tests (``broker`` and ``make_app`` come from
tests.support.broker), plus
``serving``, which waits until an app's routes consume (so a call is not returned as
unroutable because the route has not declared its queue yet)."""

from __future__ import annotations

import trio

from tests.support.broker import MUST_HAPPEN, Broker, eventually
from trioworker import App

__all__ = ["MUST_HAPPEN", "Broker", "eventually", "serving"]


async def serving(app: App) -> None:
    """Wait until every route of the running ``app`` consumes its queues."""
    with trio.fail_after(MUST_HAPPEN):
        while not app.health()["amqp"].ok:  # noqa: ASYNC110 - polling
            await trio.sleep(0.01)
