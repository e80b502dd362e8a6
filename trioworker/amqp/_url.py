"""``amqp://`` and ``amqps://`` URLs, as RabbitMQ documents them (the "URI spec").

``amqp://user:pass@host:port/vhost?heartbeat=30&frame_max=131072&channel_max=2047
&connection_name=worker-1&connection_timeout=10``

* The vhost is the path with its single leading ``/`` removed and percent-decoded, so the
  default vhost ``/`` is written ``%2F``; an absent path also means ``/``.
* User name and password are percent-decoded (so passwords may contain ``@`` or ``:``).
* ``heartbeat`` absent means "accept the broker's proposal"; 0 asks for none (RabbitMQ
  still applies its rule: if either side says 0, the other side's value wins).
* ``connection_timeout`` (seconds, float) bounds TCP connect, TLS and the AMQP handshake.
* ``max_message_size`` (bytes) is the largest message body accepted from the broker
  (default 128 MiB, RabbitMQ's own default): a larger one closes the connection.

No error message, log line or repr ever shows the password: an invalid URL is quoted with
its password replaced by ``***`` (:func:`redact_url`), however broken the URL is.

``memory://name/vhost`` reaches an in-process broker registered under ``name`` (an empty
name is a broker's default name) through the transport registered for the scheme (see
:mod:`._transports`; :mod:`trioworker.testing` registers it). Credentials are optional
(guest/guest), a port is meaningless and refused; the query options are those of
``amqp://``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .protocol import LocalProtocolError

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
URL_ENV_VAR = "TRIOWORKER_AMQP_URL"

#: RabbitMQ's default ``max_message_size``: the largest body a connection accepts.
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024

#: Schemes of in-process transports: no host or port, a broker *name* instead.
IN_PROCESS_SCHEMES = ("memory",)

_INT_OPTIONS = ("heartbeat", "frame_max", "channel_max", "max_message_size")
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
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: ``"tcp"`` for ``amqp://`` and ``amqps://`` (see ``tls``), else the in-process scheme
    #: that reaches the broker (``"memory"``: ``host`` is then the broker's name; see
    #: :mod:`._transports`).
    transport: str = "tcp"

    def safe_url(self) -> str:
        """The URL without the password, for logs and error messages."""
        if self.transport != "tcp":
            vhost = quote(self.virtual_host, safe="")
            user = "" if self.username == "guest" else f"{quote(self.username, safe='')}@"
            return f"{self.transport}://{user}{quote(self.host, safe='')}/{vhost}"
        vhost = "%2F" if self.virtual_host == "/" else self.virtual_host
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{vhost}"


#: Between two URLs of a list: a comma, where the next URL begins.
_URL_SEPARATOR = re.compile(r"\s*,\s*(?=amqps?://)", re.IGNORECASE)


def split_urls(text: str) -> list[str]:
    """``"url1,url2,url3"`` → the URLs of one cluster's nodes.

    Cut only at a comma followed by ``amqp://`` or ``amqps://``: a password holding a comma
    is never cut in two (a piece of it would then be quoted in the error about a bad URL).
    """
    return [part for part in _URL_SEPARATOR.split(text.strip().strip(",").strip()) if part]


def default_urls() -> list[str]:
    """``$TRIOWORKER_AMQP_URL`` (one URL, or a cluster's URLs comma-separated) if set, else
    the local broker with guest/guest."""
    return split_urls(os.environ.get(URL_ENV_VAR) or "") or [DEFAULT_URL]


def default_url() -> str:
    """The URL ``connect()`` uses without one: the first of :func:`default_urls` (a client
    connection goes to one node; the framework fails over across all of them)."""
    return default_urls()[0]


def redact_url(url: str) -> str:
    """``url`` with its password (everything between the user name and the host) as ``***``.

    Works on URLs that do not parse (that is when it is needed: error messages quote the
    URL): the credentials are what precedes the *last* ``@``, so a password holding ``@``,
    ``/`` or ``:`` is hidden whole. Over-redacting a URL with an ``@`` in its query is
    acceptable; leaking a password is not.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at < 0:
        return url
    user = rest[:at].split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{rest[at + 1 :]}"


def _password_candidates(url: str) -> list[str]:
    """Every spelling of the password a message could contain (raw and percent-decoded)."""
    rest = url.partition("://")[2] or url
    at = rest.rfind("@")
    if at < 0:
        return []
    userinfo = rest[:at]
    if ":" not in userinfo:
        return []
    secret = userinfo.split(":", 1)[1]
    return sorted({s for s in (secret, unquote(secret), userinfo) if s}, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    """``text`` with every spelling of ``url``'s password replaced by ``***``."""
    for secret in _password_candidates(url):
        text = text.replace(secret, "***")
    return text


def _parser_detail(exc: ValueError, url: str) -> str:
    """urllib's reason, unless it quotes a piece of the password.

    An unencoded ``/`` or ``?`` in a password cuts the URL inside it, and urllib then
    quotes a fragment (``Port could not be cast to integer value as 'Sec'``).
    """
    detail = str(exc)
    for secret in _password_candidates(url):
        for piece in re.split(r"[:/?#@\[\]]", secret):
            if len(piece) >= 2 and piece in detail:
                return "the host and port cannot be parsed (percent-encode the password)"
    return detail


def _error(url: str, message: str) -> URLError:
    return URLError(_scrub(message, url))


def parse_url(url: str) -> ConnectionParameters:
    """Parse an AMQP URL into :class:`ConnectionParameters`; :class:`URLError` if invalid.

    The error quotes the URL with its password redacted.
    """
    # The errors are raised outside the ``except`` blocks, so that no exception quoting
    # the URL (urllib's ValueError) stays reachable as their ``__context__``.
    message = None
    try:
        return _parse(url)
    except URLError as exc:
        message = str(exc)
    raise _error(url, message)


def _parse(url: str) -> ConnectionParameters:
    safe = redact_url(url)
    detail = None
    try:
        parts = urlsplit(url)
        port_value = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        detail = _parser_detail(exc, url)
    if detail is not None:
        raise URLError(f"invalid AMQP URL {safe!r}: {detail}")
    in_process = parts.scheme in IN_PROCESS_SCHEMES
    if parts.scheme not in ("amqp", "amqps") and not in_process:
        raise URLError(
            f"AMQP URL must start with amqp:// or amqps:// (or memory:// for an in-memory "
            f"broker), got {safe!r}"
        )
    tls = parts.scheme == "amqps"
    path = parts.path
    if path.startswith("/"):
        path = path[1:]
    if "/" in path:
        raise URLError(f"the vhost in {safe!r} must be percent-encoded (use %2F for '/')")
    vhost = unquote(path) if path else "/"
    if in_process:
        # The broker's name as written: ``hostname`` would lower-case it.
        name = parts.netloc.rpartition("@")[2]
        if ":" in name or port_value is not None:
            raise URLError(f"{parts.scheme}:// URLs name a broker and take no port: {safe!r}")
        host, port = unquote(name), 0
    else:
        host, port = hostname or "127.0.0.1", port_value or (5671 if tls else 5672)
    kwargs: dict[str, object] = {
        "transport": parts.scheme if in_process else "tcp",
        "host": host,
        "port": port,
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
                if key == "max_message_size" and number < 1:
                    raise ValueError("must be at least 1")
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
