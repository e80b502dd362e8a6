"""trioworker: structured-concurrency workers for RabbitMQ, HTTP, SSE and timers, on trio.

::

    import trio
    from trioworker import App, Message

    app = App(amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F", prefetch=1024)

    @app.amqp.consume(["orders"], bulk_size=256, flush_interval=1.0)
    async def handle(messages: list[Message]) -> None:
        for m in messages:
            print(m.json())

    trio.run(app.serve)
"""

from . import amqp, codecs, nameko, pools
from ._app import App
from ._errors import StartupError
from ._open_app import open_app
from ._version import __version__
from .amqp import RemoteError
from .backends.amqp import Binding, Exchange, Queue, Retry
from .backends.amqp._message import InvalidMessageBody, Message
from .codecs import Codec, register_codec
from .http import HTTPError, Request, RequestTimeout, Response, WebSocket, WebSocketDisconnect
from .metrics._timeit import Timeit
from .pipeline._actions import Actions
from .pipeline._batcher import Batcher, HandlerTimeout
from .sse import Event, SSEEvent

__all__ = [
    "Actions",
    "App",
    "Batcher",
    "Binding",
    "Codec",
    "Event",
    "Exchange",
    "HTTPError",
    "HandlerTimeout",
    "InvalidMessageBody",
    "Message",
    "Queue",
    "RemoteError",
    "Request",
    "RequestTimeout",
    "Response",
    "Retry",
    "SSEEvent",
    "StartupError",
    "Timeit",
    "WebSocket",
    "WebSocketDisconnect",
    "__version__",
    "amqp",
    "codecs",
    "nameko",
    "open_app",
    "pools",
    "register_codec",
]
