"""HTTP, the library part: requests, responses, errors and routing for trioworker apps.

``app.http`` (:class:`trioworker.backends.http.HTTPBackend`) registers routes and runs
hypercorn with the ASGI app of :mod:`trioworker.backends.http`; this package holds what
they serve with and imports nothing of the framework. See docs/http.md.
"""

from ._errors import BadRequest, HTTPError, PayloadTooLarge, RequestTimeout
from ._request import Headers, QueryParams, Request
from ._response import Response
from ._websocket import WebSocket, WebSocketDisconnect, WebSocketState
from ._ws_rpc import RPCFunctions, RPCMalformedMessage, RPCTargetDoesNotExist

__all__ = [
    "BadRequest",
    "HTTPError",
    "Headers",
    "PayloadTooLarge",
    "QueryParams",
    "RPCFunctions",
    "RPCMalformedMessage",
    "RPCTargetDoesNotExist",
    "Request",
    "RequestTimeout",
    "Response",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketState",
]
