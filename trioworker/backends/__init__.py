"""Backends feed routes from the outside world: AMQP now; HTTP, SSE and timers next."""
