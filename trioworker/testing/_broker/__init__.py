"""The in-memory AMQP 0-9-1 broker behind ``trioworker.testing`` and ``memory://`` URLs.

Layout, from the protocol-free core outwards:

* core — :mod:`._vhost` (exchanges, queues, bindings: declare, delete, bind),
  :mod:`._routing` (publishing, dead-lettering), :mod:`._exchange` and :mod:`._matching`
  (routing per exchange type), :mod:`._queue` (ready messages, consumers, TTL, limits),
  :mod:`._dead_letter` (``x-death``), :mod:`._arguments` (validation),
  :mod:`._equivalence` (re-declarations),
  :mod:`._content` (messages), :mod:`._errors` (RabbitMQ's codes and texts);
* protocol — :mod:`._connection` and :mod:`._handshake` (one connection, bytes in and
  out), :mod:`._channel` and :mod:`._publishes` (one channel), :mod:`._methods` (each
  method), :mod:`._frames` (the codec);
* trio — :mod:`._pipe` (the bounded in-memory stream), :mod:`._server` (a connection's
  tasks), :mod:`._broker` (``MemoryBroker``), :mod:`._registry` (the ``memory://``
  transport), :mod:`._auto` (the broker an app runs for a ``memory://`` URL).
"""

from ._auto import serve_memory_urls
from ._broker import MemoryBroker
from ._content import StoredMessage
from ._views import QueueView

__all__ = ["MemoryBroker", "QueueView", "StoredMessage", "serve_memory_urls"]
