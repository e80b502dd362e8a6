"""The heartbeat rules (spec 4.2.7, as RabbitMQ applies them), with time as an argument.

A negotiated heartbeat interval ``h`` (seconds; 0 turns heartbeats off) obliges both
sides: each must send *something* at least every ``h`` seconds, and may presume the peer
dead after ``2 h`` without a byte from it. Any frame counts, so a busy connection never
sends a heartbeat frame at all; only an idle one does.
"""

from __future__ import annotations

from ._errors import COMMAND_INVALID, HeartbeatTimeout


def heartbeat_due(
    now: float, interval: int, last_received: float, last_sent: float, output_queued: bool
) -> tuple[bool, float]:
    """Apply the rules at ``now``: ``(send a heartbeat frame now?, when to check next)``.

    We send when we have been silent for half an interval, not a whole one, so that the
    broker, which allows two intervals of silence, never sees us come close to its limit
    even when our timer runs late; bytes already queued will go out anyway, so they count
    as not silent. The next check is due at the next half interval, or just after the
    moment the peer's silence would exceed two intervals, whichever comes first.

    Raises :class:`HeartbeatTimeout` if the peer has been silent for more than two
    intervals.
    """
    if now - last_received > 2 * interval:
        raise HeartbeatTimeout(
            f"no data from the broker for {now - last_received:.1f} s (heartbeat {interval} s)",
            reply_code=COMMAND_INVALID,
        )
    half = interval / 2
    beat = now - last_sent >= half and not output_queued
    return beat, min(now + half, last_received + 2 * interval + 0.001)
