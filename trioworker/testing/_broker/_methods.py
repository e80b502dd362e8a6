"""What each method a client sends on a channel does (``Basic.Publish`` and the acks are
decoded by hand in :mod:`._connection`; ``Channel.Open``/``Close`` are the connection's).

One handler per method: it calls the vhost or the channel, which raise the
:class:`~._errors.ChannelError` RabbitMQ would answer with, and sends the reply unless the
request said ``nowait``. A method no client sends (``Basic.Deliver`` from a client) is
RabbitMQ's 503 *unimplemented method*; a feature RabbitMQ has and the memory broker does
not (transactions, exchange-to-exchange bindings, global QoS, ...) is a 540 naming it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from pamqp import base, commands

from ._channel import ServerChannel
from ._errors import (
    COMMAND_INVALID,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    ConnectionError,
    access_refused,
    not_implemented,
    resource,
)
from ._frames import encode_content, encode_get_ok
from ._vhost import REPLY_TO

__all__ = ["handle_method"]

F = TypeVar("F", bound=base.Frame)


def reply(cls: type[F], **fields: Any) -> F:
    """A reply frame without pamqp's argument validation, whose name rules (``[\\w.:-]``)
    are stricter than RabbitMQ's (any UTF-8): the broker echoes names it accepted."""
    method = cls()
    for name, value in fields.items():
        setattr(method, name, value)
    return method


# --------------------------------------------------------------------- exchange


def _exchange_declare(ch: ServerChannel, m: commands.Exchange.Declare) -> None:
    ch.vhost.declare_exchange(
        m.exchange or "",
        m.exchange_type or "direct",
        passive=bool(m.passive),
        durable=bool(m.durable),
        auto_delete=bool(m.auto_delete),
        internal=bool(m.internal),
        arguments=m.arguments,
    )
    if not m.nowait:
        ch.send(commands.Exchange.DeclareOk())


def _exchange_delete(ch: ServerChannel, m: commands.Exchange.Delete) -> None:
    ch.vhost.delete_exchange(m.exchange or "", if_unused=bool(m.if_unused))
    if not m.nowait:
        ch.send(commands.Exchange.DeleteOk())


def _exchange_bind(ch: ServerChannel, m: base.Frame) -> None:
    raise not_implemented("exchange-to-exchange bindings (exchange.bind/unbind)")


# ------------------------------------------------------------------------ queue


def _queue_declare(ch: ServerChannel, m: commands.Queue.Declare) -> None:
    name = m.queue or ""
    if m.passive and not name:
        name = ch.last_queue
    queue = ch.vhost.declare_queue(
        name,
        owner=ch.owner,
        passive=bool(m.passive),
        durable=bool(m.durable),
        exclusive=bool(m.exclusive),
        auto_delete=bool(m.auto_delete),
        arguments=m.arguments,
    )
    ch.last_queue = queue.name
    if not m.nowait:
        ch.send(
            reply(
                commands.Queue.DeclareOk,
                queue=queue.name,
                message_count=len(queue.ready),
                consumer_count=len(queue.consumers),
            )
        )


def _queue_bind(ch: ServerChannel, m: commands.Queue.Bind) -> None:
    ch.vhost.bind(
        m.queue or ch.last_queue,
        m.exchange or "",
        m.routing_key or "",
        m.arguments,
        owner=ch.owner,
    )
    if not m.nowait:
        ch.send(commands.Queue.BindOk())


def _queue_unbind(ch: ServerChannel, m: commands.Queue.Unbind) -> None:
    ch.vhost.unbind(
        m.queue or ch.last_queue, m.exchange or "", m.routing_key or "", m.arguments, owner=ch.owner
    )
    ch.send(commands.Queue.UnbindOk())


def _queue_purge(ch: ServerChannel, m: commands.Queue.Purge) -> None:
    count = ch.vhost.purge_queue(m.queue or ch.last_queue, owner=ch.owner)
    if not m.nowait:
        ch.send(commands.Queue.PurgeOk(message_count=count))


def _queue_delete(ch: ServerChannel, m: commands.Queue.Delete) -> None:
    count = ch.vhost.delete_queue(
        m.queue or ch.last_queue,
        owner=ch.owner,
        if_unused=bool(m.if_unused),
        if_empty=bool(m.if_empty),
    )
    if not m.nowait:
        ch.send(commands.Queue.DeleteOk(message_count=count))


# ------------------------------------------------------------------------ basic


def _basic_qos(ch: ServerChannel, m: commands.Basic.Qos) -> None:
    if m.prefetch_size:
        raise ConnectionError(NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})")
    if m.global_:
        raise not_implemented("global QoS (basic.qos global=true)")
    ch.prefetch = m.prefetch_count or 0
    ch.send(commands.Basic.QosOk())


def _basic_consume(ch: ServerChannel, m: commands.Basic.Consume) -> None:
    tag = m.consumer_tag or f"amq.ctag-{secrets.token_urlsafe(16)}"
    if tag in ch.consumers:
        raise ConnectionError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'")
    if "x-priority" in (m.arguments or {}):
        raise not_implemented("consumer priorities (x-priority)")
    name = m.queue or ch.last_queue
    no_ack = bool(m.no_ack)
    if name == REPLY_TO:
        ch.consume_replies(tag, no_ack)  # a new, empty queue: no delivery before ConsumeOk
        if not m.nowait:
            ch.send(reply(commands.Basic.ConsumeOk, consumer_tag=tag))
        return
    queue = ch.vhost.find_queue(name, ch.owner)
    if queue.exclusive_consumer or (m.exclusive and queue.consumers):
        raise access_refused(f"{resource('queue', name, ch.vhost.name)} in exclusive use")
    if not m.nowait:  # ConsumeOk first: deliveries may follow at once
        ch.send(reply(commands.Basic.ConsumeOk, consumer_tag=tag))
    ch.subscribe(queue, tag, no_ack=no_ack, exclusive=bool(m.exclusive))


def _basic_cancel(ch: ServerChannel, m: commands.Basic.Cancel) -> None:
    tag = m.consumer_tag or ""
    ch.cancel(tag)
    if not m.nowait:
        ch.send(reply(commands.Basic.CancelOk, consumer_tag=tag))


def _basic_get(ch: ServerChannel, m: commands.Basic.Get) -> None:
    queue = ch.vhost.find_queue(m.queue or ch.last_queue, ch.owner)
    entry = queue.get()
    if entry is None:
        ch.send(commands.Basic.GetEmpty())
        return
    no_ack = bool(m.no_ack)
    tag = ch.take_delivery_tag(queue, entry, no_ack)
    content = entry.content
    ch.output.send(
        encode_get_ok(
            ch.number,
            tag,
            entry.redelivered,
            content.exchange,
            content.routing_key,
            len(queue.ready),
        )
        + encode_content(ch.number, content, ch.output.frame_max)
    )


def _basic_recover(ch: ServerChannel, m: commands.Basic.Recover) -> None:
    if not m.requeue:
        raise not_implemented("basic.recover with requeue=false")
    ch.recover()
    ch.send(commands.Basic.RecoverOk())


def _confirm_select(ch: ServerChannel, m: commands.Confirm.Select) -> None:
    ch.confirm = True
    if not m.nowait:
        ch.send(commands.Confirm.SelectOk())


def _channel_flow(ch: ServerChannel, m: commands.Channel.Flow) -> None:
    if not m.active:
        raise ConnectionError(NOT_IMPLEMENTED, "active=false")  # RabbitMQ's answer too
    ch.send(commands.Channel.FlowOk(active=True))


def _unsupported(feature: str) -> Callable[[ServerChannel, Any], None]:
    def refuse(ch: ServerChannel, m: Any) -> None:
        raise not_implemented(feature)

    return refuse


_HANDLERS: dict[type[base.Frame], Callable[[ServerChannel, Any], None]] = {
    commands.Exchange.Declare: _exchange_declare,
    commands.Exchange.Delete: _exchange_delete,
    commands.Exchange.Bind: _exchange_bind,
    commands.Exchange.Unbind: _exchange_bind,
    commands.Queue.Declare: _queue_declare,
    commands.Queue.Bind: _queue_bind,
    commands.Queue.Unbind: _queue_unbind,
    commands.Queue.Purge: _queue_purge,
    commands.Queue.Delete: _queue_delete,
    commands.Basic.Qos: _basic_qos,
    commands.Basic.Consume: _basic_consume,
    commands.Basic.Cancel: _basic_cancel,
    commands.Basic.Get: _basic_get,
    commands.Basic.Recover: _basic_recover,
    commands.Basic.RecoverAsync: _unsupported("basic.recover-async"),
    commands.Confirm.Select: _confirm_select,
    commands.Channel.Flow: _channel_flow,
    commands.Tx.Select: _unsupported("transactions (tx.select)"),
    commands.Tx.Commit: _unsupported("transactions (tx.commit)"),
    commands.Tx.Rollback: _unsupported("transactions (tx.rollback)"),
}


def handle_method(ch: ServerChannel, method: base.Frame) -> None:
    """Apply a client's method on an open channel."""
    handler = _HANDLERS.get(type(method))
    if handler is None:
        raise ConnectionError(COMMAND_INVALID, f"unimplemented method {method.name}")
    handler(ch, method)
