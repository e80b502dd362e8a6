"""What a ``TestClient`` changes in the app under test, and puts back when it is done.

The app is the user's, often a module-level object that many tests share, so everything
is undone when the client's block ends — whatever way it ends:

* every AMQP connection goes to the test's broker (``app.amqp.redirect``), each keeping its
  vhost (the memory broker gets those vhosts: RabbitMQ's are an operator's business);
* the HTTP backend binds no socket (``app.http.bind_socket``): the test's ``client.http``
  calls the ASGI app in-process — unless the test asked for a real socket;
* SSE streams are read through the client's feeds (``app.sse.transport``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, cast

import httpx

from ..amqp import parse_url

if TYPE_CHECKING:
    from .. import App
    from ._broker import MemoryBroker
    from ._sse import SSEFeeds

__all__ = ["http_client", "redirected"]


@contextmanager
def redirected(
    app: App, url: str, memory: MemoryBroker | None, bind_http: bool, feeds: SSEFeeds
) -> Iterator[None]:
    """``app`` pointed at the broker of ``url`` and at ``feeds`` for the block."""
    http_bind, sse_transport = app.http.bind_socket, app.sse.transport
    app.amqp.redirect(url)
    try:
        if memory is not None:
            vhosts = [parse_url(sup.url).virtual_host for sup in app.amqp.supervisors]
            for vhost in {parse_url(app.amqp.url).virtual_host, *vhosts}:
                memory.add_vhost(vhost)
        app.http.bind_socket = bind_http
        app.sse.transport = feeds
        yield
    finally:
        app.amqp.redirect(None)
        app.http.bind_socket = http_bind
        app.sse.transport = sse_transport


@asynccontextmanager
async def http_client(app: App, bind_http: bool) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app's HTTP routes: in-process (ASGI), or over the socket the
    app listens on."""
    if bind_http:
        client = httpx.AsyncClient(base_url=app.http.url)
    else:
        asgi = cast("Any", app.http.asgi)  # ASGI 3 with plain dicts
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi), base_url="http://testserver"
        )
    async with client:
        yield client
