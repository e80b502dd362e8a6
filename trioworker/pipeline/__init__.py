"""What every source of work shares: the backend contract, the batcher, handler adaptation,
backoff, and the decisions a handler makes per item.

Nothing here knows about AMQP, HTTP or SSE: a batcher takes items, forms bulks, calls the
handler and reports one outcome per item; the backends (:mod:`trioworker.backends`) turn
those into protocol actions.
"""

from ._actions import Actions
from ._backend import AppServices, Backend, Health
from ._backoff import backoff_delay
from ._batcher import Batcher, BatcherStats, HandlerTimeout
from ._handlers import Handler, adapt, handler_name
from ._histogram import Histogram

__all__ = [
    "Actions",
    "AppServices",
    "Backend",
    "Batcher",
    "BatcherStats",
    "Handler",
    "HandlerTimeout",
    "Health",
    "Histogram",
    "adapt",
    "backoff_delay",
    "handler_name",
]
