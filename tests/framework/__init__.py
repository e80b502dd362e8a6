"""Tests of the worker framework: batcher, ack coalescing, Timeit, and App/AMQP routes."""
