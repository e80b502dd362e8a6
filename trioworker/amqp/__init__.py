"""trioworker's own AMQP 0-9-1 client: a sans-IO core (:mod:`.protocol`) run over trio.

::

    async with trioworker.amqp.connect("amqp://guest:guest@127.0.0.1:5672/%2F") as conn:
        async with conn.channel() as channel:
            await channel.confirm_select()
            await channel.basic_publish(b"hello", routing_key="greetings")
"""

from ._channel import Channel
from ._confirmation import Confirmation
from ._connect import connect, default_client_properties
from ._connection import Connection
from ._consumer import Consumer
from ._errors import (
    AccessRefusedError,
    AMQPConnectionError,
    AuthenticationError,
    ChannelClosedError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectionTimeout,
    ConsumerCancelledError,
    MessageReturnedError,
    NotAMQPServerError,
    NotFoundError,
    PreconditionFailedError,
    PublishError,
    PublishNackedError,
    ResourceLockedError,
    TLSCertificateRequiredError,
    TLSError,
    TLSVerificationError,
    VirtualHostError,
)
from ._rpc import (
    RPC_ERROR_HEADER,
    NoRouteError,
    RemoteError,
    RpcClient,
    open_rpc_client,
    rpc_client,
)
from ._transports import Opener, register_transport, unregister_transport
from ._url import (
    ConnectionParameters,
    URLError,
    default_url,
    default_urls,
    parse_url,
    redact_url,
    split_urls,
)
from .protocol import (
    AMQPError,
    BasicProperties,
    Delivery,
    LocalProtocolError,
    PropertyDecodeError,
    ProtocolError,
    RemoteProtocolError,
    Returned,
)

__all__ = [
    "RPC_ERROR_HEADER",
    "AMQPConnectionError",
    "AMQPError",
    "AccessRefusedError",
    "AuthenticationError",
    "BasicProperties",
    "Channel",
    "ChannelClosedError",
    "Confirmation",
    "ConnectError",
    "Connection",
    "ConnectionClosedError",
    "ConnectionLostError",
    "ConnectionParameters",
    "ConnectionTimeout",
    "Consumer",
    "ConsumerCancelledError",
    "Delivery",
    "LocalProtocolError",
    "MessageReturnedError",
    "NoRouteError",
    "NotAMQPServerError",
    "NotFoundError",
    "Opener",
    "PreconditionFailedError",
    "PropertyDecodeError",
    "ProtocolError",
    "PublishError",
    "PublishNackedError",
    "RemoteError",
    "RemoteProtocolError",
    "ResourceLockedError",
    "Returned",
    "RpcClient",
    "TLSCertificateRequiredError",
    "TLSError",
    "TLSVerificationError",
    "URLError",
    "VirtualHostError",
    "connect",
    "default_client_properties",
    "default_url",
    "default_urls",
    "open_rpc_client",
    "parse_url",
    "redact_url",
    "register_transport",
    "rpc_client",
    "split_urls",
    "unregister_transport",
]
