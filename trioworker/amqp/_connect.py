"""Opening a connection: TCP (and TLS), the AMQP handshake, and the ``async with`` block
whose nursery runs the connection's tasks.

Every failure before the connection is open is mapped to the exception that names its fix
(see :mod:`._errors`), and all of it runs under one ``connection_timeout``: a silent or
slow peer gives :class:`ConnectionTimeout`, never a hang.
"""

from __future__ import annotations

import dataclasses
import platform
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._version import __version__
from ._connection import RECEIVE_SIZE, Connection
from ._errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectionTimeout,
    NotAMQPServerError,
    TLSCertificateRequiredError,
    TLSError,
    TLSVerificationError,
    VirtualHostError,
)
from ._transports import transport_opener
from ._url import ConnectionParameters, default_url, parse_url
from .protocol import AMQPConnection, ConnectionClosed, ConnectionOpened, RemoteProtocolError


def default_client_properties(connection_name: str | None = None) -> dict[str, Any]:
    """The client properties we announce; capabilities tell RabbitMQ what we understand."""
    props: dict[str, Any] = {
        "product": "trioworker",
        "version": __version__,
        "platform": f"Python {platform.python_version()} (trio {trio.__version__})",
        "information": "https://github.com/trioworker/trioworker",
        "capabilities": {
            "publisher_confirms": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "basic.nack": True,
            "authentication_failure_close": True,
            "exchange_exchange_bindings": True,
            "per_consumer_qos": True,
        },
    }
    if connection_name:
        props["connection_name"] = connection_name
    return props


async def _open_stream(
    params: ConnectionParameters, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    if params.transport != "tcp":
        # An in-process broker (memory://): its opener hands over the stream; no TLS there.
        opener = transport_opener(params.transport)
        if opener is None:
            raise ConnectError(
                f"cannot connect to {params.safe_url()}: nothing serves {params.transport}:// "
                "URLs in this process (import trioworker.testing and run a MemoryBroker, or "
                "let the app start its in-memory broker)"
            )
        return await opener(params)
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(params.host, params.port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {params.safe_url()}: {exc}") from exc
    if params.tls or ssl_context is not None:
        context = ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(stream, context, server_hostname=params.host)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            await trio.aclose_forcefully(stream)
            raise _tls_error(params, exc) from exc
        stream = tls
    return stream


def _tls_error(params: ConnectionParameters, exc: BaseException) -> ConnectError:
    """The error that names what went wrong in a TLS handshake."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    where = f"{params.host}:{params.port}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or cause.reason or str(cause)
        hint = (
            " (the certificate is not valid for that name)"
            if "hostname" in reason.lower() or "ip address mismatch" in reason.lower()
            else " (pass ssl_context= with the CA that signed it: "
            "context.load_verify_locations(cafile))"
        )
        return TLSVerificationError(
            f"TLS certificate verification failed for {where}: {reason}{hint}",
            host=params.host,
            reason=reason,
        )
    if isinstance(cause, ssl.SSLError) and _is_certificate_required(cause):
        return _certificate_required(params, cause)
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or str(cause)
        return TLSError(
            f"TLS handshake with {params.safe_url()} failed: {reason}",
            host=params.host,
            reason=reason,
        )
    return ConnectError(f"TLS handshake with {params.safe_url()} failed: {cause or exc!r}")


def _is_certificate_required(error: ssl.SSLError) -> bool:
    reason = (error.reason or str(error)).upper()
    return "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason


def _certificate_required(params: ConnectionParameters, error: ssl.SSLError) -> TLSError:
    reason = error.reason or str(error)
    return TLSCertificateRequiredError(
        f"{params.host}:{params.port} refused the TLS connection ({reason}): it requires a "
        "client certificate (mutual TLS): pass ssl_context= with "
        "context.load_cert_chain(certfile, keyfile)",
        host=params.host,
        reason=reason,
    )


def _looks_like_tls(head: bytes) -> bool:
    """A TLS record (alert 0x15 or handshake 0x16, version 3.x) where the AMQP reply to
    our protocol header was expected: the port speaks TLS."""
    return len(head) >= 3 and head[0] in (0x15, 0x16) and head[1] == 0x03 and head[2] <= 0x04


async def _handshake(
    core: AMQPConnection, stream: trio.abc.Stream, params: ConnectionParameters
) -> None:
    """Run the AMQP handshake up to ``Connection.OpenOk`` and map failures to clear errors."""
    core.initiate()
    started = False
    # The first bytes of the reply, held until there are enough to recognise a TLS server.
    head: bytes | None = b""
    try:
        await stream.send_all(core.data_to_send())
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                if not started:
                    raise NotAMQPServerError(
                        f"{params.host}:{params.port} closed the connection before the AMQP "
                        "handshake: is it an AMQP 0-9-1 broker?"
                    )
                raise ConnectionLostError(
                    f"{params.safe_url()} closed the connection during the AMQP handshake"
                )
            if head is not None:
                head += data
                if len(head) < 3 and head[0] in (0x15, 0x16):
                    continue  # too few bytes to tell yet
                if _looks_like_tls(head) and not isinstance(stream, trio.SSLStream):
                    raise ConnectError(
                        f"{params.host}:{params.port} answered with TLS: this port speaks "
                        "TLS: use amqps:// (or pass ssl_context=)"
                    )
                data, head = head, None
            try:
                events = core.receive_data(data, trio.current_time())
            except RemoteProtocolError as exc:
                if not started:
                    raise NotAMQPServerError(
                        f"{params.host}:{params.port} does not speak AMQP 0-9-1: {exc}"
                    ) from exc
                raise ConnectionLostError(f"protocol error during the handshake: {exc}") from exc
            started = started or core.state.value != "await_start"
            out = core.data_to_send(trio.current_time())
            if out:
                await stream.send_all(out)
            for event in events:
                if isinstance(event, ConnectionOpened):
                    return
                if isinstance(event, ConnectionClosed):
                    if event.reply_code == 403:
                        raise AuthenticationError(
                            f"{params.safe_url()} refused the credentials of user "
                            f"{params.username!r}: {event.reply_text}"
                        )
                    if event.reply_code == 530:
                        raise VirtualHostError(
                            f"cannot open vhost {params.virtual_host!r} on "
                            f"{params.safe_url()}: {event.reply_text}"
                        )
                    raise ConnectionClosedError(event.reply_code, event.reply_text)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        if isinstance(exc, ConnectError):
            raise  # ours (a TLS server on a plaintext connect), an OSError too
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and isinstance(stream, trio.SSLStream):
            # TLS 1.3: the server checks our certificate after the handshake looked done,
            # so its refusal (an alert) is what the first read gets.
            if _is_certificate_required(cause):
                raise _certificate_required(params, cause) from exc
            raise _tls_error(params, exc) from exc
        if not started and isinstance(stream, trio.SSLStream):
            # A TLS broker that drops us right after the handshake, before Connection.Start:
            # RabbitMQ with fail_if_no_peer_cert resets the connection (TLS 1.3 checks the
            # client's certificate only then).
            raise TLSCertificateRequiredError(
                f"{params.host}:{params.port} dropped the TLS connection before the AMQP "
                f"handshake ({exc}): it probably requires a client certificate (mutual "
                "TLS): pass ssl_context= with context.load_cert_chain(certfile, keyfile)",
                host=params.host,
                reason=str(exc),
            ) from exc
        if not started:
            raise NotAMQPServerError(
                f"{params.host}:{params.port} dropped the connection before the AMQP handshake "
                f"({exc!r}): is it an AMQP 0-9-1 broker?"
            ) from exc
        raise ConnectionLostError(f"connection lost during the AMQP handshake: {exc!r}") from exc


@asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    client_properties: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Connection]:
    """Open an AMQP connection for the duration of an ``async with`` block.

    ``url`` defaults to ``$TRIOWORKER_AMQP_URL`` or the local broker. Keyword ``options``
    override the URL's query options (``heartbeat=``, ``connection_timeout=``, ...).
    ``amqps://`` URLs (or an ``ssl_context``) use TLS; verification is on unless the
    context you pass turns it off. ``max_message_size=`` (bytes, default 128 MiB) bounds
    the bodies the broker may send: a larger one closes the connection.

    Raises, within ``connection_timeout``: :class:`ConnectError` (its subclass
    :class:`TLSVerificationError` when the broker's certificate does not verify,
    :class:`TLSCertificateRequiredError` when the broker wants a client certificate),
    :class:`NotAMQPServerError`, :class:`AuthenticationError`, :class:`VirtualHostError`,
    :class:`ConnectionTimeout`. Leaving the block closes the connection politely.
    """
    params = parse_url(url or default_url())
    if options:
        params = dataclasses.replace(params, **options)
    props = default_client_properties(params.connection_name)
    if client_properties:
        props.update(client_properties)
    core = AMQPConnection(
        username=params.username,
        password=params.password,
        virtual_host=params.virtual_host,
        heartbeat=params.heartbeat,
        frame_max=params.frame_max,
        channel_max=params.channel_max,
        client_properties=props,
        max_message_size=params.max_message_size,
    )
    try:
        with trio.fail_after(params.connection_timeout):
            stream = await _open_stream(params, ssl_context)
            try:
                await _handshake(core, stream, params)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise ConnectionTimeout(
            f"no AMQP connection to {params.safe_url()} within {params.connection_timeout} s"
        ) from None
    # The connection's own tasks never raise (they record errors instead), so the only
    # exception that can cross this nursery is the caller's. It is caught here and raised
    # again after the nursery closed, so it reaches the caller as itself, not wrapped in an
    # ExceptionGroup: `except NotFoundError:` around the block keeps working.
    conn = Connection(params, core, stream)
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        try:
            yield conn
        except BaseException as exc:
            body_error = exc
        finally:
            with trio.CancelScope(shield=True):
                await conn.close()
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
