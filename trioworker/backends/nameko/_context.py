"""The Nameko context of the call or event being handled: its ``nameko.*`` headers.

Nameko carries a worker's context in message headers named ``nameko.<key>`` — the call id
stack (``nameko.call_id_stack``: ``"{service}.{method}.{uuid4}"`` per hop, the caller's
first), and whatever the caller put there (``user_id``, ``language``, ``auth_token``, ...).
A worker receives its parents' stack, adds its own call id, and sends the result — with the
other keys unchanged — on every call and dispatch it makes, keeping the last
``parent_calls_tracked`` (10) parents: at most 11 entries (``nameko.containers``).

Here the context of what is being handled lives in a context variable, set for the duration
of an RPC method and of an event handler taking one event, so ``app.nameko.call`` and
``app.nameko.dispatch`` made while handling propagate it without being told — in child
tasks and ``def`` handlers' threads too (trio copies context variables into both). An event
handler taking a bulk of events has one context per event: ``context_of(message)``, made
current with ``use_context``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..amqp._message import Message

__all__ = [
    "DEFAULT_PARENT_CALLS_TRACKED",
    "HEADER_PREFIX",
    "NamekoContext",
    "context_from_headers",
    "context_of",
    "current_context",
    "handling",
    "new_call_id",
    "use_context",
]

HEADER_PREFIX = "nameko."
_CALL_ID_STACK = "call_id_stack"
#: Nameko's ``parent_calls_tracked`` default: parents kept in a call id stack.
DEFAULT_PARENT_CALLS_TRACKED = 10


def new_call_id(service: str, method: str) -> str:
    """``"{service}.{method}.{uuid4}"``, as ``WorkerContext.call_id`` spells it."""
    return f"{service}.{method}.{uuid.uuid4()}"


@dataclasses.dataclass(frozen=True)
class NamekoContext:
    """The context of one RPC call or event being handled (Nameko's ``WorkerContext``).

    ``call_id`` is this handling's own id; ``parent_call_ids`` the stack it came with;
    ``data`` the other ``nameko.*`` headers, prefix stripped (``data["user_id"]``).
    """

    call_id: str
    parent_call_ids: tuple[str, ...] = ()
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parent_calls_tracked: int = dataclasses.field(default=DEFAULT_PARENT_CALLS_TRACKED, repr=False)

    @property
    def call_id_stack(self) -> list[str]:
        """The stack sent onwards: the last ``parent_calls_tracked`` parents and our id."""
        keep = self.parent_calls_tracked
        parents = list(self.parent_call_ids[-keep:]) if keep > 0 else []
        return [*parents, self.call_id]

    @property
    def origin_call_id(self) -> str | None:
        """The first call of the chain (``None`` if this handling started it)."""
        return self.parent_call_ids[0] if self.parent_call_ids else None

    @property
    def immediate_parent_call_id(self) -> str | None:
        """The call that caused this one (``None`` if none)."""
        return self.parent_call_ids[-1] if self.parent_call_ids else None

    def headers(self) -> dict[str, Any]:
        """The ``nameko.*`` headers of a call or dispatch made in this context. ``None``
        values are dropped, as Nameko's ``HeaderEncoder`` does (AMQP has no null)."""
        headers = {f"{HEADER_PREFIX}{k}": v for k, v in self.data.items() if v is not None}
        headers[HEADER_PREFIX + _CALL_ID_STACK] = self.call_id_stack
        return headers


def context_from_headers(
    headers: Mapping[str, Any] | None,
    service: str,
    method: str,
    parent_calls_tracked: int = DEFAULT_PARENT_CALLS_TRACKED,
) -> NamekoContext:
    """The context of handling a message with these headers as ``service.method``.

    Only ``nameko.*`` headers count. (Nameko itself passes every header on, prefixed:
    an ``x-trioworker-attempt`` would come back as ``nameko.x-trioworker-attempt``.)
    A ``call_id_stack`` that is not a list of strings is ignored rather than failing
    the message: it is bookkeeping, not the request.
    """
    data: dict[str, Any] = {}
    parents: tuple[str, ...] = ()
    for key, value in (headers or {}).items():
        if not key.startswith(HEADER_PREFIX):
            continue
        name = key[len(HEADER_PREFIX) :]
        if name == _CALL_ID_STACK:
            if isinstance(value, list | tuple):
                parents = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in value)
            continue
        data[name] = value.decode() if isinstance(value, bytes) else value
    return NamekoContext(new_call_id(service, method), parents, data, parent_calls_tracked)


_CURRENT: ContextVar[NamekoContext | None] = ContextVar("trioworker_nameko_context", default=None)
#: The contexts of the events of the bulk being handled, by message identity.
_BULK: ContextVar[Mapping[int, NamekoContext] | None] = ContextVar(
    "trioworker_nameko_bulk", default=None
)


def current_context() -> NamekoContext | None:
    """The context of the RPC call or event being handled here, or ``None`` (outside any
    ``app.nameko`` handler, or in a handler taking a bulk of several events)."""
    return _CURRENT.get()


@contextmanager
def use_context(context: NamekoContext | None) -> Iterator[NamekoContext | None]:
    """Make ``context`` current for the block: calls and dispatches in it carry it."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def context_of(message: Message) -> NamekoContext:
    """The context of one event of the bulk an ``app.nameko`` event handler is handling.

    Raises ``LookupError`` for a message that is not part of it.
    """
    bulk = _BULK.get()
    context = None if bulk is None else bulk.get(id(message))
    if context is None:
        raise LookupError(
            f"{message!r} is not an event being handled by an app.nameko event handler here"
        )
    return context


@contextmanager
def handling(
    contexts: Mapping[int, NamekoContext], current: NamekoContext | None
) -> Iterator[None]:
    """What an event handler's call runs in: its bulk's contexts, and the current one."""
    bulk_token = _BULK.set(contexts)
    token = _CURRENT.set(current)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        _BULK.reset(bulk_token)
