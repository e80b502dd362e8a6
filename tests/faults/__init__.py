"""Fault-injection tests of the worker framework against the real RabbitMQ.

Connections are closed by the broker (``rabbitmqctl``), cut by a TCP proxy, queues are
deleted under a consumer, and worker processes get SIGTERM, SIGINT and SIGKILL. Every test
checks the delivery promises of design.md ("Semantics that must hold") message by message.
"""
