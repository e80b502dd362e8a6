"""What a channel needs of its connection, as a Protocol.

A :class:`~._channel.Channel` is created by its :class:`~._connection.Connection` and
dispatched to by the connection's reader, so the connection module imports the channel
module. The channel needs only a few things back — the writer woken, publishers held back,
the connection's error — and names them here instead of importing the connection: the two
modules stay a tree, not a cycle, and this is the whole contract between them.
"""

from __future__ import annotations

from typing import Protocol

from ._url import ConnectionParameters


class ConnectionLink(Protocol):
    """The connection as its channels see it (``channel.connection``)."""

    @property
    def params(self) -> ConnectionParameters:
        """Where the connection goes (for reprs and logs: use ``safe_url()``)."""
        ...

    @property
    def is_closed(self) -> bool:
        """True once the connection is closed or lost."""
        ...

    def raise_if_closed(self) -> None:
        """Raise the connection's error if it ended."""
        ...

    def wake_writer(self) -> None:
        """Tell the writer task frames were queued in the core. Never blocks."""
        ...

    async def wait_writable(self) -> None:
        """Backpressure for publishers: wait while the broker blocks the connection or too
        much is queued for the socket. Always a cancellation point."""
        ...
