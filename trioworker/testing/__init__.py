"""Test an app without a broker: ``TestClient``, ``make_message``, the pytest plugin.

::

    from trioworker.testing import TestClient, make_message

    async def test_orders():
        async with TestClient(app) as client:      # an in-memory broker, no network
            await client.publish({"qty": 0}, routing_key="orders")
            await client.drain()                   # every route idle, nothing in flight
            assert [m.json() for m in client.queue("orders.dlq").messages] == [{"qty": 0}]

See docs/testing.md.
"""

from ._broker import MemoryBroker, QueueView, StoredMessage
from ._client import TestClient
from ._drain import DrainTimeout
from ._messages import MessageStub, make_message
from ._queues import FetchedMessage, NeedsMemoryBroker, QueuedMessage, QueueInspector
from ._replies import NoReplyError
from ._sse import SSEFeed
from ._websocket import TestWebSocket, WebSocketRejected

__all__ = [
    "DrainTimeout",
    "FetchedMessage",
    "MemoryBroker",
    "MessageStub",
    "NeedsMemoryBroker",
    "NoReplyError",
    "QueueInspector",
    "QueueView",
    "QueuedMessage",
    "SSEFeed",
    "StoredMessage",
    "TestClient",
    "TestWebSocket",
    "WebSocketRejected",
    "make_message",
]
