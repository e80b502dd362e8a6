"""Which in-memory brokers run in this process, and the ``memory://`` transport.

A broker registers itself under its name for as long as it runs
(:meth:`MemoryBroker.running`); ``memory://name/vhost`` connections are handed to the one
of that name by the opener registered with :func:`trioworker.amqp.register_transport`
when this package is imported. The library never imports this package: the registry is
its only way in.
"""

from __future__ import annotations

from typing import Protocol

import trio

from ...amqp import ConnectError, ConnectionParameters, register_transport

__all__ = ["Acceptor", "lookup", "register", "unregister"]


class Acceptor(Protocol):
    """A running broker, as the transport sees it."""

    name: str

    async def accept(self, params: ConnectionParameters) -> trio.abc.Stream:
        """A new connection's client end."""
        ...


_running: dict[str, Acceptor] = {}


def register(broker: Acceptor) -> None:
    """``broker`` serves ``memory://<its name>/`` from now on."""
    other = _running.get(broker.name)
    if other is not None and other is not broker:
        raise RuntimeError(f"an in-memory broker named {broker.name!r} is already running")
    _running[broker.name] = broker


def unregister(broker: Acceptor) -> None:
    if _running.get(broker.name) is broker:
        del _running[broker.name]


def lookup(name: str) -> Acceptor | None:
    """The running broker called ``name``, if any."""
    return _running.get(name)


async def _open(params: ConnectionParameters) -> trio.abc.Stream:
    broker = _running.get(params.host)
    if broker is None:
        raise ConnectError(
            f"cannot connect to {params.safe_url()}: no in-memory broker named "
            f"{params.host!r} is running (start one with trioworker.testing.MemoryBroker)"
        )
    return await broker.accept(params)


register_transport("memory", _open)
