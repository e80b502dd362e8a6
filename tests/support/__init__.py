"""Test-only helpers: RabbitMQ admin via rabbitmqctl, fault-injecting proxies, fake servers, TLS.

Nothing here imports ``trioworker``: the helpers must keep working (and be trustworthy) while
the client under test is broken or half-written.
"""
