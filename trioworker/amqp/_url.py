"""``amqp://`` and ``amqps://`` URLs, as RabbitMQ documents them (the "URI spec").

``amqp://user:pass@host:port/vhost?heartbeat=30&frame_max=131072&channel_max=2047
&connection_name=worker-1&connection_timeout=10``

* The vhost is the path with its single leading ``/`` removed and percent-decoded, so the
  default vhost ``/`` is written ``%2F``; an absent path also means ``/``.
* User name and password are percent-decoded (so passwords may contain ``@`` or ``:``).
* ``heartbeat`` absent means "accept the broker's proposal"; 0 asks for none (RabbitMQ
  still applies its rule: if either side says 0, the other side's value wins).
* ``connection_timeout`` (seconds, float) bounds TCP connect, TLS and the AMQP handshake.
"""

from __future__ import annotations

import dataclasses
import os
from urllib.parse import parse_qs, unquote, urlsplit

from .protocol import LocalProtocolError

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
URL_ENV_VAR = "TRIOWORKER_AMQP_URL"

_INT_OPTIONS = ("heartbeat", "frame_max", "channel_max")
_KNOWN_OPTIONS = {*_INT_OPTIONS, "connection_name", "connection_timeout"}


class URLError(LocalProtocolError, ValueError):
    """The AMQP URL cannot be understood."""


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionParameters:
    """Everything needed to open one connection; built by :func:`parse_url`."""

    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = dataclasses.field(default="guest", repr=False)
    virtual_host: str = "/"
    tls: bool = False
    heartbeat: int | None = None
    frame_max: int = 131072
    channel_max: int = 2047
    connection_name: str | None = None
    connection_timeout: float = 10.0

    def safe_url(self) -> str:
        """The URL without the password, for logs and error messages."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = "%2F" if self.virtual_host == "/" else self.virtual_host
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{vhost}"


def default_url() -> str:
    """``$TRIOWORKER_AMQP_URL`` if set, else the local broker with guest/guest."""
    return os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def parse_url(url: str) -> ConnectionParameters:
    """Parse an AMQP URL into :class:`ConnectionParameters`; :class:`URLError` if invalid."""
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError as exc:
        raise URLError(f"invalid AMQP URL {url!r}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise URLError(f"AMQP URL must start with amqp:// or amqps://, got {url!r}")
    tls = parts.scheme == "amqps"
    path = parts.path
    if path.startswith("/"):
        path = path[1:]
    if "/" in path:
        raise URLError(f"the vhost in {url!r} must be percent-encoded (use %2F for '/')")
    vhost = unquote(path) if path else "/"
    kwargs: dict[str, object] = {
        "host": parts.hostname or "127.0.0.1",
        "port": port_value or (5671 if tls else 5672),
        "username": unquote(parts.username) if parts.username is not None else "guest",
        "password": unquote(parts.password) if parts.password is not None else "guest",
        "virtual_host": vhost,
        "tls": tls,
    }
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in _KNOWN_OPTIONS:
            raise URLError(
                f"unknown option {key!r} in AMQP URL (known: {', '.join(sorted(_KNOWN_OPTIONS))})"
            )
        value = values[-1]
        try:
            if key in _INT_OPTIONS:
                number = int(value)
                if number < 0:
                    raise ValueError("must not be negative")
                kwargs[key] = number
            elif key == "connection_timeout":
                seconds = float(value)
                if not seconds > 0:
                    raise ValueError("must be positive")
                kwargs[key] = seconds
            else:
                kwargs[key] = value
        except ValueError as exc:
            raise URLError(f"invalid {key}={value!r} in AMQP URL: {exc}") from None
    return ConnectionParameters(**kwargs)  # type: ignore[arg-type]
