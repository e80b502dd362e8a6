"""What each method the broker sends on a channel (not channel 0) does.

:data:`._state.CHANNEL_TRANSITIONS` says whether a method may arrive in the channel's
state and which state it leads to; the handlers here queue the replies the protocol
mandates (the peer waits for them, so the caller cannot be trusted to send them) and
produce the events. ``Basic.Deliver``, ``Basic.Ack`` and ``Basic.Nack`` on an open channel
never come here: the parse loop decodes them by hand (:mod:`._receive`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import base, commands

from . import _content
from ._channel import ChannelRecord
from ._confirms import Confirms
from ._errors import UNEXPECTED_FRAME, RemoteProtocolError
from ._events import (
    AMQPEvent,
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConsumerCancelled,
    MethodReceived,
)
from ._frames import encode_method
from ._methods import (
    BASIC_CANCEL,
    BASIC_GET_OK,
    BASIC_RETURN,
    CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK,
    CHANNEL_FLOW,
    CHANNEL_OPEN_OK,
    CONFIRM_SELECT_OK,
)
from ._state import ChannelState, Marker, channel_transition

Send = Callable[[bytes], None]
_Action = Callable[[ChannelRecord, Any, list[AMQPEvent], Send], None]


def receive_channel_method(
    ch: ChannelRecord, method: base.Frame, events: list[AMQPEvent], send: Send
) -> Marker | None:
    """Apply ``method``, which arrived on ``ch``; queue its replies with ``send``.

    Returns :data:`~._state.FREED` if the channel number is free from now on (the caller
    forgets the channel), else ``None``. Raises :class:`RemoteProtocolError` (505) for a
    method the channel's state does not allow.
    """
    index = method.index
    if ch.content is not None and index != CHANNEL_CLOSE:
        # spec 4.2.6: a message's content frames follow its method without a break.
        raise RemoteProtocolError(
            f"{method.name} on channel {ch.number} interrupts a message's content",
            UNEXPECTED_FRAME,
        )
    awaiting = ch.awaiting
    target = channel_transition(
        ch.state,
        index,
        method.name,
        ch.number,
        awaited=awaiting is not None and method.name in awaiting,
        stale=ch.stale,
    )
    if target is None:
        return None  # discarded
    _ACTIONS.get(index, _on_reply)(ch, method, events, send)
    if isinstance(target, ChannelState):
        ch.state = target
        return None
    return target


def _on_open_ok(
    ch: ChannelRecord, method: commands.Channel.OpenOk, events: list[AMQPEvent], send: Send
) -> None:
    ch.stale = False
    events.append(ChannelOpened(ch.number))


def _on_close(
    ch: ChannelRecord, method: commands.Channel.Close, events: list[AMQPEvent], send: Send
) -> None:
    send(encode_method(ch.number, commands.Channel.CloseOk()))
    events.append(
        ChannelClosed(
            ch.number,
            method.reply_code or 0,
            method.reply_text or "",
            by_peer=True,
            class_id=method.class_id or 0,
            method_id=method.method_id or 0,
        )
    )


def _on_close_ok(
    ch: ChannelRecord, method: commands.Channel.CloseOk, events: list[AMQPEvent], send: Send
) -> None:
    events.append(ChannelClosed(ch.number, 200, "closed by client", by_peer=False))


def _on_flow(
    ch: ChannelRecord, method: commands.Channel.Flow, events: list[AMQPEvent], send: Send
) -> None:
    send(encode_method(ch.number, commands.Channel.FlowOk(method.active)))
    events.append(ChannelFlow(ch.number, bool(method.active)))


def _on_return(
    ch: ChannelRecord, method: commands.Basic.Return, events: list[AMQPEvent], send: Send
) -> None:
    fields = (method.reply_code, method.reply_text, method.exchange, method.routing_key)
    _content.announce(ch, (BASIC_RETURN, *fields))


def _on_cancel(
    ch: ChannelRecord, method: commands.Basic.Cancel, events: list[AMQPEvent], send: Send
) -> None:
    # RabbitMQ's consumer_cancel_notify: the broker cancelled the consumer (its queue was
    # deleted, its node went down) and, unless nowait, waits for our CancelOk.
    if not method.nowait:
        send(encode_method(ch.number, commands.Basic.CancelOk(method.consumer_tag)))
    events.append(ConsumerCancelled(ch.number, method.consumer_tag or ""))


def _on_reply(ch: ChannelRecord, method: Any, events: list[AMQPEvent], send: Send) -> None:
    """The reply to the synchronous request outstanding on ``ch``."""
    ch.awaiting = None
    index = method.index
    if index == BASIC_GET_OK:
        fields = (
            method.delivery_tag,
            method.redelivered,
            method.exchange,
            method.routing_key,
            method.message_count,
        )
        _content.announce(ch, (BASIC_GET_OK, *fields))
        return  # the Delivery event comes with the content
    if index == CONFIRM_SELECT_OK and ch.confirms is None:
        ch.confirms = Confirms()
    events.append(MethodReceived(ch.number, method))


#: What each method does; a method not listed is a reply (:func:`_on_reply`).
_ACTIONS: dict[int, _Action] = {
    CHANNEL_OPEN_OK: _on_open_ok,
    CHANNEL_CLOSE: _on_close,
    CHANNEL_CLOSE_OK: _on_close_ok,
    CHANNEL_FLOW: _on_flow,
    BASIC_RETURN: _on_return,
    BASIC_CANCEL: _on_cancel,
}
