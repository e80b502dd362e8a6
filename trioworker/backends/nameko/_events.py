"""``@app.nameko.event_handler``: a consume route on the queue Nameko's ``EventHandler``
would consume, so Nameko dispatchers reach it and app instances share it as Nameko's do.

The route is an ordinary ``app.amqp.consume`` route — bulks, acknowledgements, retries,
reconnects and shutdown are the same — whose handler is wrapped to get what a Nameko
handler gets: the decoded payload (with ``bulk_size > 1``, the list of them), and, if its
second parameter asks for them, the message(s).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ...amqp import AMQPError
from ...codecs import CodecError
from ...pipeline._handlers import Handler, adapt
from ..amqp import Binding, Queue
from ..amqp._decoding import Decoding
from ..amqp._message import Message, use_decoding
from ..amqp._typed import InvalidBody, body_type, wants_messages
from ._context import NamekoContext, context_from_headers, handling
from ._wire import NAMEKO_JSON, HandlerType, event_exchange, event_queue_name

__all__ = ["HANDLER_TYPES", "event_queue", "event_route_handler"]

log = logging.getLogger("trioworker.nameko")

HANDLER_TYPES = ("service_pool", "singleton", "broadcast")
#: How Nameko messages decode: kombu's JSON (``utf-8`` encoding named), or plain JSON.
DECODING = Decoding(NAMEKO_JSON, accept=("json",))


def event_queue(
    source: str,
    event_type: str,
    handler_type: HandlerType,
    *,
    service: str,
    method: str,
    reliable_delivery: bool,
    broadcast_identifier: str | None,
) -> Queue:
    """The queue ``EventHandler.setup`` declares, with the same flags — a declaration that
    differs from a Nameko instance's would be a 406 for one of the two.

    Durable always; ``auto_delete`` without reliable delivery (the queue goes with its last
    consumer); ``exclusive`` for a broadcast queue without reliable delivery (one consumer:
    this instance). Bound to ``{source}.events`` with the event type.
    """
    name = event_queue_name(source, event_type, handler_type, service, method, broadcast_identifier)
    return Queue(
        name,
        durable=True,
        auto_delete=not reliable_delivery,
        exclusive=handler_type == "broadcast" and not reliable_delivery,
        bindings=[Binding(event_exchange(source), event_type)],
    )


def event_route_handler(
    handler: Handler,
    *,
    many: bool,
    service: str,
    method: str,
    parent_calls_tracked: Callable[[], int],
) -> Callable[[list[Message]], Awaitable[Any]]:
    """Wrap ``handler(payload[, message])`` (``many``: ``handler(payloads[, messages])``)
    into the ``list[Message]`` handler a route runs.

    A body that is not JSON, or does not validate into the payload's annotated model, can
    never be handled: its message is rejected without requeue (dead-lettered where the
    queue has a dead-letter queue) and left out; the others go on. Each event gets its
    Nameko context (see ``_context``); with one event it is the current one.
    """
    typed = body_type(handler)
    params = _parameters(handler)
    if params and _annotation_is_message(params[0]):
        raise TypeError(
            f"event handler {method!r}: its first parameter gets the payload; take the "
            "Message as the second parameter (annotated Message)"
        )
    if typed is not None and typed.many != many:
        want = "list[...]" if many else "a single model"
        raise TypeError(
            f"event handler {method!r}: with bulk_size {'> 1' if many else '= 1'} it gets "
            f"{'a list of payloads' if many else 'one payload'}: annotate it {want}"
        )
    with_messages = typed.with_messages if typed else wants_messages(handler, params, many=many)
    call = adapt(handler)

    async def handle(messages: list[Message]) -> Any:
        payloads: list[Any] = []
        kept: list[Message] = []
        for message in messages:
            use_decoding(message, DECODING)
            try:
                payload = await DECODING.decode_async(message)
                if typed is not None:
                    payload = typed.validate(payload)
            except (CodecError, InvalidBody, AMQPError) as exc:
                message.reject(requeue=False)
                log.warning(
                    "event %d from queue %r rejected (not requeued): %s",
                    message.delivery_tag,
                    message.queue,
                    exc,
                )
                continue
            payloads.append(payload)
            kept.append(message)
        if not kept:
            return None
        tracked = parent_calls_tracked()
        contexts: dict[int, NamekoContext] = {
            id(m): context_from_headers(m.properties.headers, service, method, tracked)
            for m in kept
        }
        current = contexts[id(kept[0])] if len(kept) == 1 else None
        with handling(contexts, current):
            if many:
                return await (call(payloads, kept) if with_messages else call(payloads))
            return await (call(payloads[0], kept[0]) if with_messages else call(payloads[0]))

    # The watchdog names a blocked route by the user's function, found through __wrapped__.
    return functools.update_wrapper(handle, handler, assigned=(), updated=())


def _parameters(handler: Handler) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return []


def _annotation_is_message(param: inspect.Parameter) -> bool:
    raw = param.annotation
    return raw is Message or (isinstance(raw, str) and raw.rsplit(".", 1)[-1] == "Message")
