"""Transports other than TCP: how a connection reaches a broker that lives in this process.

``amqp://`` and ``amqps://`` connect over TCP (and TLS). An in-process scheme such as
``memory://name/vhost`` names a broker running inside this trio run instead; whoever runs
that broker registers an *opener* for the scheme, and :func:`~._connect.connect` asks it
for the stream a connection then speaks AMQP over — the client's code is otherwise the
same, byte for byte, so whatever runs against such a broker runs against RabbitMQ too.

The registry keeps this library ignorant of who provides the transport:
:mod:`trioworker.testing` registers ``memory`` when it is imported, and this package
imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._url import IN_PROCESS_SCHEMES, ConnectionParameters

__all__ = ["Opener", "register_transport", "transport_opener", "unregister_transport"]

#: ``opener(params)``: a connected stream to the broker ``params`` names, or
#: :class:`~._errors.ConnectError` if there is none.
Opener = Callable[[ConnectionParameters], Awaitable[trio.abc.Stream]]

_openers: dict[str, Opener] = {}


def register_transport(scheme: str, opener: Opener) -> None:
    """Serve ``scheme://`` URLs with ``opener`` (replacing an earlier registration).

    ``scheme`` must be one :func:`~._url.parse_url` knows as in-process (``memory``): the
    URL syntax is the library's, only the way to reach the broker is plugged in.
    """
    if scheme not in IN_PROCESS_SCHEMES:
        raise ValueError(
            f"cannot register a transport for {scheme!r}: only {', '.join(IN_PROCESS_SCHEMES)}"
            " URLs are served by registered transports"
        )
    _openers[scheme] = opener


def unregister_transport(scheme: str, opener: Opener | None = None) -> None:
    """Forget the opener of ``scheme`` (only if it is ``opener``, when given)."""
    if opener is None or _openers.get(scheme) is opener:
        _openers.pop(scheme, None)


def transport_opener(scheme: str) -> Opener | None:
    """The opener registered for ``scheme``, if any."""
    return _openers.get(scheme)
