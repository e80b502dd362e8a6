"""Nameko interop: what handlers and callers of ``app.nameko`` use (docs/nameko.md).

::

    from trioworker import nameko

    @app.nameko.rpc
    async def whoami() -> list[str]:
        return nameko.current_context().call_id_stack

    try:
        await app.nameko.call("payments", "charge", 10)
    except nameko.RemoteError as exc:
        print(exc.exc_type, exc.value)
"""

from .backends.nameko import (
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    NamekoContext,
    NamekoService,
    RemoteError,
    UnknownService,
    context_of,
    current_context,
    use_context,
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
