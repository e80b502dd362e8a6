"""Named thread and process pools for sync handlers (docs/pools.md).

::

    app.pool("cpu", kind="process", size=2, max_tasks_per_child=1000)

    @app.amqp.consume(["images"], pool="cpu", bulk_size=64)
    def resize(messages: list[Message]) -> None:    # runs in a worker process
        for m in messages:
            pools.publish(thumbnail(m.body), routing_key="thumbnails")  # sent before the acks

:func:`publish` is for handlers running in a process pool; from a thread use
``app.amqp.publish_sync``.
"""

from .backends.amqp._outbox import publish
from .pipeline._pools import Pool, PoolKind, Pools
from .pipeline._processes import RemoteHandlerError, RemoteTraceback, WorkerCrashedError

__all__ = [
    "Pool",
    "PoolKind",
    "Pools",
    "RemoteHandlerError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "publish",
]
