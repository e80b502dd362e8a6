"""The glue between a source of work and the pipeline: each backend turns what its source
delivers (AMQP deliveries, HTTP requests, SSE events, timer ticks) into handler calls
through :mod:`trioworker.pipeline`, and the handlers' decisions back into protocol actions.

Backends see the app only through :class:`trioworker.pipeline.AppServices`.
"""
