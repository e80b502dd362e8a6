"""``app.nameko``: the app as a Nameko 2.x service — events and RPC, both directions."""

from ._context import NamekoContext, context_of, current_context, use_context
from ._service import NamekoService
from ._wire import (
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    RemoteError,
    UnknownService,
)

__all__ = [
    "IncorrectSignature",
    "MalformedRequest",
    "MethodNotFound",
    "NamekoContext",
    "NamekoService",
    "RemoteError",
    "UnknownService",
    "context_of",
    "current_context",
    "use_context",
]
