"""HTTP routes for trioworker apps: requests, responses, routing, and the ASGI app.

``app.http`` (:class:`trioworker.backends.http.HTTPBackend`) registers routes and runs
hypercorn; this package holds what it serves with. See docs/http.md.
"""

from ._asgi import UNMATCHED, ASGIApp
from ._errors import BadRequest, HTTPError, PayloadTooLarge
from ._request import Headers, QueryParams, Request
from ._response import Response
from ._routing import CONVERTERS, Resolution, Route, Router

__all__ = [
    "CONVERTERS",
    "UNMATCHED",
    "ASGIApp",
    "BadRequest",
    "HTTPError",
    "Headers",
    "PayloadTooLarge",
    "QueryParams",
    "Request",
    "Resolution",
    "Response",
    "Route",
    "Router",
]
