"""The app's named broker connections: each one URL or the URLs of one cluster's nodes,
with its TLS context and whether its nodes are tried in a random order.

``"default"`` is ``App(amqp_url=)``; ``app.amqp.add_connection()`` names others. A route,
publish or call picks one by name (and a vhost); the backend asks this table for the URLs
of the supervisor it starts. ``redirect()`` points every connection at one broker (what
``TestClient`` does) and puts them back after.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from ...amqp import parse_url
from ._failover import check_urls
from ._registration import vhost_url
from ._routes import DEFAULT_CONNECTION

__all__ = ["Connections"]


class Connections:
    """Connection name → URLs, TLS context and shuffle; see the module docstring."""

    def __init__(
        self, urls: tuple[str, ...], *, ssl_context: ssl.SSLContext | None, shuffle: bool
    ) -> None:
        self.shuffle = shuffle  # the default for connections added later
        self._urls: dict[str, tuple[str, ...]] = {DEFAULT_CONNECTION: urls}
        self._shuffles: dict[str, bool] = {DEFAULT_CONNECTION: shuffle}
        self._ssl_contexts: dict[str, ssl.SSLContext | None] = {DEFAULT_CONNECTION: ssl_context}
        self._redirected_from: dict[str, tuple[str, ...]] | None = None

    def add(
        self,
        name: str,
        url: str | Sequence[str],
        *,
        ssl_context: ssl.SSLContext | None,
        shuffle: bool | None,
    ) -> None:
        """Define connection ``name``; defining it again the same way is a no-op, another
        way a ``ValueError`` (two routes must not silently disagree on a broker)."""
        urls = check_urls(url, what=f"connection {name!r}")  # fail now, not at startup
        shuffle = self.shuffle if shuffle is None else shuffle
        if name in self._urls and (
            self._urls[name] != urls
            or self._ssl_contexts.get(name) is not ssl_context
            or self._shuffles.get(name) != shuffle
        ):
            raise ValueError(f"connection {name!r} is already defined")
        self._urls[name] = urls
        self._shuffles[name] = shuffle
        self._ssl_contexts[name] = ssl_context

    def urls(self, connection: str, vhost: str | None = None) -> tuple[str, ...]:
        """The URLs of ``connection`` (its nodes), on ``vhost`` if given."""
        try:
            urls = self._urls[connection]
        except KeyError:
            raise ValueError(
                f"unknown AMQP connection {connection!r}; add it with "
                f"app.amqp.add_connection({connection!r}, url)"
            ) from None
        return tuple(vhost_url(url, vhost) for url in urls)

    def all_urls(self) -> list[str]:
        """Every URL of every connection (which in-memory brokers to run, for one)."""
        return [url for urls in self._urls.values() for url in urls]

    def shuffle_of(self, connection: str) -> bool:
        return self._shuffles.get(connection, False)

    def ssl_context_of(self, connection: str) -> ssl.SSLContext | None:
        return self._ssl_contexts.get(connection)

    def redirect(self, url: str | None) -> None:
        """Point every connection at the broker of ``url``, each keeping its vhost;
        ``None`` puts the configured URLs back."""
        if url is None:
            self._urls.update(self._redirected_from or {})
            self._redirected_from = None
            return
        check_urls(url, what="redirect()")
        self._redirected_from = self._redirected_from or dict(self._urls)
        for name, urls in list(self._urls.items()):
            self._urls[name] = (vhost_url(url, parse_url(urls[0]).virtual_host),)
