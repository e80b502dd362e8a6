"""Dead-lettering: the message a queue re-publishes when it rejects, expires or drops one.

The copy is built as RabbitMQ 3.10 builds it (``rabbit_dead_letter:make_msg``):

* it is published to the queue's ``x-dead-letter-exchange`` with its
  ``x-dead-letter-routing-key`` if set (the ``CC`` header then goes), else with the
  routing keys it had;
* the ``expiration`` property is removed (it would expire again), kept in the death
  record as ``original-expiration``;
* the ``x-death`` header, a list of tables, gets a record of this death first in the
  list: ``count``, ``reason`` (``rejected``, ``expired``, ``maxlen``,
  ``delivery_limit``), ``queue``, ``time``, ``exchange``, ``routing-keys``. A record for
  the same queue and reason is not repeated: its ``count`` goes up and it moves to the
  front (its other fields stay those of the first time). The first death also sets
  ``x-first-death-reason``, ``-queue`` and ``-exchange``.

A message that would come back to a queue it already died in, with no rejection anywhere
in between, is in a fully automatic cycle (a queue whose TTL dead-letters into itself):
RabbitMQ drops it for that queue, and so does :func:`in_cycle`.
"""

from __future__ import annotations

import datetime
from typing import Any

from ._content import Content, copy_properties

__all__ = ["dead_letter_copy", "in_cycle"]


def _cc_keys(headers: dict[str, Any]) -> list[str]:
    cc = headers.get("CC")
    if isinstance(cc, list):
        return [k for k in cc if isinstance(k, str)]
    return []


def dead_letter_copy(
    content: Content,
    reason: str,
    queue: str,
    exchange: str,
    routing_key: str | None,
    wall_time: float,
) -> tuple[Content, list[str]]:
    """The dead-lettered copy of ``content`` and the routing keys it is published with.

    Raises :class:`~trioworker.amqp.PropertyDecodeError` if the original's properties
    cannot be decoded.
    """
    props = copy_properties(content.properties)
    headers: dict[str, Any] = dict(props.headers or {})
    keys = [content.routing_key, *_cc_keys(headers)]
    if routing_key is not None:
        death_keys = [routing_key]
        headers.pop("CC", None)
    else:
        death_keys = keys
    info: dict[str, Any] = {
        "reason": reason,
        "queue": queue,
        "time": datetime.datetime.fromtimestamp(int(wall_time), tz=datetime.UTC),
        "exchange": content.exchange,
        "routing-keys": keys,
    }
    if props.expiration:
        info["original-expiration"] = props.expiration
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        headers["x-first-death-reason"] = reason
        headers["x-first-death-queue"] = queue
        headers["x-first-death-exchange"] = content.exchange
        headers["x-death"] = [{"count": 1, **info}]
    else:
        match = next(
            (
                d
                for d in deaths
                if isinstance(d, dict) and d.get("queue") == queue and d.get("reason") == reason
            ),
            None,
        )
        if match is None:
            record = {"count": 1, **info}
            others = deaths
        else:
            record = dict(match)
            count = record.get("count")
            record["count"] = count + 1 if isinstance(count, int) else 1
            others = [d for d in deaths if d is not match]
        headers["x-death"] = [dict(sorted(record.items())), *others]
    props.headers = headers
    props.expiration = None
    return content.replace(props, exchange=exchange, routing_key=death_keys[0]), death_keys


def in_cycle(queue: str, content: Content) -> bool:
    """Whether the dead-lettered ``content`` reaching ``queue`` closes a cycle with no
    rejection in it (RabbitMQ's ``is_cycle``): it is then dropped for that queue."""
    deaths = content.properties.headers.get("x-death") if content.properties.headers else None
    if not isinstance(deaths, list):
        return False
    passed: list[Any] = []
    for death in deaths:
        passed.append(death)
        if isinstance(death, dict) and death.get("queue") == queue:
            return all(isinstance(d, dict) and d.get("reason") != "rejected" for d in passed)
    return False
