"""``app.amqp``: routes fed by RabbitMQ queues, publishing, RPC routes, reconnects."""

from ._backend import AMQPBackend

__all__ = ["AMQPBackend"]
