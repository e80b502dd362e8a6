"""The HTTP server's limits and timeouts: ``app.http.max_connections``, ``body_timeout``, ...

Without them one slow client could hold a connection (and a file descriptor) forever, and
enough of them exhaust the process: hypercorn's defaults set no read deadline on a request
body and no cap on connections. Each setting is checked when it is assigned, so a wrong
value fails on the line that set it, not when the server starts.

What bounds what (docs/http.md "Limits and timeouts"):

- request headers must arrive within ``keep_alive_timeout`` of the connection opening (or
  of the previous response): hypercorn's idle timer runs until a request's headers are
  complete, and ``max_header_size`` bounds how much it buffers meanwhile;
- the body must be complete within ``body_timeout`` of the headers, else 408 and the
  connection is closed (enforced by the ASGI app, see ``_asgi.py``);
- at most ``max_connections`` are open; the others wait in the listen queue
  (``backlog``) without a descriptor (see ``_server.py``);
- ``read_timeout`` (off by default) stops reading a connection silent for that long.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_SIZE",
    "ServerLimits",
]

#: Default ``app.http.max_connections``.
DEFAULT_MAX_CONNECTIONS = 1000
#: Default ``app.http.body_timeout`` (seconds).
DEFAULT_BODY_TIMEOUT = 30.0
#: Default ``app.http.keep_alive_timeout`` (seconds): hypercorn's.
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
#: Default ``app.http.max_header_size`` (bytes): hypercorn's ``h11_max_incomplete_size``.
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
#: Default ``app.http.backlog``: hypercorn's.
DEFAULT_BACKLOG = 100


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"app.http.{name} must be an int of at least 1, got {value!r}")
    return value


def _seconds(name: str, value: float | None, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        off = " (or None for no limit)" if optional else ""
        raise ValueError(f"app.http.{name} must be a number of seconds above 0{off}, got {value!r}")
    return float(value)


class ServerLimits:
    """The limits part of ``app.http`` (:class:`HTTPBackend` inherits it).

    Set them before the app starts; a server already running keeps the values it started
    with.
    """

    def __init__(self) -> None:
        self.max_connections = DEFAULT_MAX_CONNECTIONS
        self.body_timeout = DEFAULT_BODY_TIMEOUT
        self.keep_alive_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT
        self.read_timeout = None
        self.max_header_size = DEFAULT_MAX_HEADER_SIZE
        self.backlog = DEFAULT_BACKLOG

    @property
    def max_connections(self) -> int:
        """Most connections open at once (default 1000); more wait to be accepted."""
        return self._max_connections

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        self._max_connections = _count("max_connections", value)

    @property
    def body_timeout(self) -> float | None:
        """Seconds from a request's headers to the end of its body (default 30): past it,
        reading the body raises ``RequestTimeout`` (408) and the connection closes.
        None: no limit."""
        return self._body_timeout

    @body_timeout.setter
    def body_timeout(self, value: float | None) -> None:
        self._body_timeout = _seconds("body_timeout", value, optional=True)

    @property
    def keep_alive_timeout(self) -> float:
        """Seconds an idle connection stays open (default 5); also the time a client has
        to send a request's headers."""
        return self._keep_alive_timeout

    @keep_alive_timeout.setter
    def keep_alive_timeout(self, value: float) -> None:
        seconds = _seconds("keep_alive_timeout", value, optional=False)
        assert seconds is not None
        self._keep_alive_timeout = seconds

    @property
    def read_timeout(self) -> float | None:
        """Seconds hypercorn waits for a client's next bytes before it stops reading
        that connection (default None: no limit). A request in flight still gets its
        answer; the connection closes after it. body_timeout and keep_alive_timeout already
        bound slow clients; this also bounds one that stalls mid-headers."""
        return self._read_timeout

    @read_timeout.setter
    def read_timeout(self, value: float | None) -> None:
        self._read_timeout = _seconds("read_timeout", value, optional=True)

    @property
    def max_header_size(self) -> int:
        """Largest request line plus headers in bytes (default 16 KiB); larger gets 431."""
        return self._max_header_size

    @max_header_size.setter
    def max_header_size(self, value: int) -> None:
        self._max_header_size = _count("max_header_size", value)

    @property
    def backlog(self) -> int:
        """Connections the kernel queues for us while we are not accepting (default 100)."""
        return self._backlog

    @backlog.setter
    def backlog(self, value: int) -> None:
        self._backlog = _count("backlog", value)

    def apply_limits(self, config: Config) -> None:
        """Set hypercorn's part of the limits on ``config``."""
        config.keep_alive_timeout = self.keep_alive_timeout
        # hypercorn types it as int, but only ever passes it to trio.fail_after.
        config.read_timeout = self.read_timeout  # type: ignore[assignment]
        config.h11_max_incomplete_size = self.max_header_size
        config.backlog = self.backlog
