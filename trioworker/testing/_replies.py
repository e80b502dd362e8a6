"""``client.call``: an RPC call that cannot hang on a request nobody will answer.

The classic trap of broker fakes (FastStream's ``request()`` waiting forever when the
handler nacks): a request taken by a route that never replies — a plain consume route, a
handler that rejects it — or left in a queue nothing consumes leaves the caller waiting
for its timeout. The client watches the app meanwhile: once the app is idle (``drain()``'s
rule) and still no reply came, none will, and the call fails at once with
:class:`NoReplyError`, saying so.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..amqp import RpcClient
from ..codecs import Codec

__all__ = ["NO_REPLY_GRACE", "NoReplyError", "call_watched"]

#: On RabbitMQ, how long an idle app still gets for a reply on its way (the broker routes
#: it asynchronously); on the memory broker "idle" is exact and no grace is needed.
NO_REPLY_GRACE = 0.5


class NoReplyError(Exception):
    """The app went idle without replying to an RPC request: no reply will come."""


async def call_watched(
    rpc: RpcClient,
    queue: str,
    payload: Any,
    *,
    timeout: float | None,  # noqa: ASYNC109 - as app.amqp.call
    codec: str | Codec | None,
    idle: Callable[[], Awaitable[None]],
    exact: bool,
    watch: bool,
    describe: Callable[[str], str],
) -> Any:
    """``rpc.call(queue, payload)``, failing with :class:`NoReplyError` once ``idle()``
    returns and no reply came (``exact``: the broker is in memory, no grace needed).
    ``watch=False`` only waits (a queue consumed by some other process than the app)."""
    outcome: tuple[bool, Any] | None = None
    gave_up = False

    async def watch_for_silence(call_scope: trio.CancelScope) -> None:
        nonlocal gave_up
        await idle()
        if not exact:
            await trio.sleep(NO_REPLY_GRACE)
        gave_up = True
        call_scope.cancel()

    with trio.move_on_after(math.inf if timeout is None else timeout):
        async with trio.open_nursery() as nursery:
            call_scope = trio.CancelScope()
            if watch:
                nursery.start_soon(watch_for_silence, call_scope)
            with call_scope:
                try:
                    outcome = (True, await rpc.call(queue, payload, timeout=None, codec=codec))
                except Exception as exc:  # the call's own errors: raised below, unwrapped
                    outcome = (False, exc)
            nursery.cancel_scope.cancel()
    if outcome is None:
        if gave_up:
            raise NoReplyError(
                f"client.call({queue!r}): the app is idle and sent no reply{describe(queue)}: "
                f"the request was taken by a route that does not reply (a consume route, "
                f"not @app.amqp.rpc; or the handler rejected it), or nothing consumes "
                f"{queue!r}"
            )
        raise TimeoutError(f"client.call({queue!r}): no reply within {timeout} s")
    ok, value = outcome
    if not ok:
        raise value
    return value
