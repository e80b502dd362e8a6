"""Fault-injection tests of the worker framework against the real RabbitMQ.

Connections are closed by the broker (``rabbitmqctl``), cut by a TCP proxy, queues are
deleted under a consumer, and worker processes get SIGTERM, SIGINT and SIGKILL. Every test
checks the delivery promises of docs/architecture.md ("Promises") message by message.
"""
