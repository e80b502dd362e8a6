"""``app.amqp``: routes fed by RabbitMQ queues, publishing, RPC routes, reconnects."""

from ._backend import AMQPBackend
from ._retry_policy import Retry
from ._topology import Binding, Exchange, Queue

__all__ = ["AMQPBackend", "Binding", "Exchange", "Queue", "Retry"]
