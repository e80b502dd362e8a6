"""The nodes of one cluster: which URL to connect to next, and how long to wait first.

A connection of the app may name several URLs — the nodes of one RabbitMQ cluster
(docs/cluster.md). Each connect goes to one node; on a refusal or a connection loss the
supervisor moves on to the next node *at once*, because the next node is very likely up
when this one is not; only after a full round — every node tried without success — does it
wait, with exponential backoff and jitter, so that a whole cluster being down (or a
network cut) costs a few connects per round, not a hot loop, and many workers coming back
do not arrive all in the same instant.

A connection lost soon after it opened counts as a failure of its node, not a success: the
backoff starts over only once a connection stayed up for :data:`STABLE_AFTER` seconds, so a
node (or all of them) accepting connections and dropping them at once never turns into a
reconnect loop.

With ``shuffle=True`` the order is drawn at random once per connection (and kept: moving on
after a failure goes round the same order), so that many workers spread over the nodes
instead of all piling onto the first one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ...amqp import URLError, parse_url, redact_url
from ...pipeline._backoff import backoff_delay

__all__ = ["STABLE_AFTER", "Failover", "check_urls", "node_label"]

#: Seconds a connection must stay up for the backoff between rounds to start over.
STABLE_AFTER = 5.0


def check_urls(urls: str | Sequence[str], *, what: str) -> tuple[str, ...]:
    """``urls`` (one URL or the URLs of one cluster) checked: each must parse.

    The error names the bad URL's place in the list and ``what`` (``amqp_url``,
    ``$TRIOWORKER_AMQP_URL``, ``connection 'audit'``), and shows it without its password.
    """
    items = (urls,) if isinstance(urls, str) else tuple(urls)
    if not items:
        raise ValueError(f"{what}: no AMQP URL given (an empty list)")
    for index, url in enumerate(items, 1):
        if not isinstance(url, str):
            raise TypeError(f"{what}: AMQP URLs must be str, got {type(url).__name__}")
        try:
            parse_url(url)
        except URLError as exc:
            place = f"URL {index} of {len(items)}" if len(items) > 1 else "the URL"
            message = f"{what}: {place} is invalid: {exc}"
        else:
            continue
        raise URLError(message)  # outside the except: no context quoting the URL
    if len(set(items)) != len(items):
        twice = next(url for url in items if items.count(url) > 1)
        raise ValueError(f"{what}: {redact_url(twice)!r} is listed twice")
    return items


def node_label(url: str) -> str:
    """``host:port`` of ``url``: how logs, ``/health`` and metrics name a node."""
    params = parse_url(url)
    host = f"[{params.host}]" if ":" in params.host else params.host
    return f"{host}:{params.port}"


class Failover:
    """One connection's walk over the nodes: the URL to try, and the wait before it.

    Call :meth:`opened` when a connect succeeded and :meth:`failed` when one failed or the
    connection was lost; :meth:`failed` moves on to the next node and returns how long to
    wait before trying it (0 within a round).
    """

    def __init__(
        self, urls: Sequence[str], *, shuffle: bool = False, rng: random.Random | None = None
    ) -> None:
        order = list(urls)
        if shuffle:
            (rng or random.Random()).shuffle(order)
        #: The nodes in the order they are tried (shuffled once, if asked).
        self.urls: tuple[str, ...] = tuple(order)
        self.labels: tuple[str, ...] = tuple(node_label(url) for url in order)
        self._position = 0
        self._failed_in_round = 0
        self._rounds_failed = 0
        self._opened_at: float | None = None

    def __repr__(self) -> str:
        return f"<Failover {', '.join(self.labels)} at {self.label}>"

    @property
    def url(self) -> str:
        """The URL to connect to now (or the one connected to)."""
        return self.urls[self._position]

    @property
    def label(self) -> str:
        """``host:port`` of :attr:`url`."""
        return self.labels[self._position]

    @property
    def several(self) -> bool:
        """True for a cluster of more than one URL (logs and ``/health`` name the node)."""
        return len(self.urls) > 1

    def opened(self, now: float) -> None:
        """The connect to :attr:`url` succeeded at ``now`` (seconds, any monotonic clock)."""
        self._opened_at = now
        self._failed_in_round = 0

    def failed(self, now: float) -> float:
        """The connect to :attr:`url` failed, or its connection was lost, at ``now``.

        Moves on to the next node and returns the seconds to wait before trying it: 0 while
        the round goes on, a backoff with jitter once every node failed in a row.
        """
        if self._opened_at is not None and now - self._opened_at >= STABLE_AFTER:
            self._rounds_failed = 0  # it worked for a while: a fresh start
        self._opened_at = None
        self._position = (self._position + 1) % len(self.urls)
        self._failed_in_round += 1
        if self._failed_in_round < len(self.urls):
            return 0.0
        self._failed_in_round = 0
        delay = backoff_delay(self._rounds_failed)
        self._rounds_failed += 1
        return delay

    def next_step(self, delay: float) -> str:
        """What comes after a failure whose :meth:`failed` gave ``delay``, for the log line
        (naming the next node when there are several)."""
        if not self.several:
            return f"reconnecting in {delay:.2f} s"
        if not delay:
            return f"failing over to node {self.label} now"
        return f"every node failed; reconnecting in {delay:.2f} s, to node {self.label}"
