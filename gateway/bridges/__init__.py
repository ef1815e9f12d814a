"""The dispatch seam between the router and the bridges.

The application matches a request to a ``Route``, builds a ``CallContext`` and calls
``dispatch``, which picks the handler registered for the route's ``Cardinality``. The REST bridge
(``gateway.bridges.rest``) serves UNARY; the streaming bridges register themselves with
``register``. A cardinality with no handler answers 501 with a google.rpc.Status body.

Every error response any bridge writes goes through ``status_response`` or
``rpc_error_response``, so every error body is google.rpc.Status JSON, its HTTP status comes
from the one table in ``gateway.transcode``, and 401 carries ``WWW-Authenticate: Bearer``.
Each such response carries its gRPC status code under ``GRPC_CODE`` (a response key, not a
header) for the request's trace span (gateway/telemetry.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from gateway.config import Settings
from gateway.httprule import Bindings
from gateway.metadata import Metadata, metadata_pairs, response_headers
from gateway.routes import Cardinality, Route
from gateway.transcode import (
    JsonOptions,
    QueryOptions,
    http_status_for,
    status_from_parts,
    status_json,
)
from gateway.upstream import Multicallable, Upstream

__all__ = [
    "BRIDGES",
    "GRPC_CODE",
    "JSON",
    "CallContext",
    "Handler",
    "dispatch",
    "register",
    "rpc_error_response",
    "status_response",
]

JSON = "application/json"
GRPC_CODE = web.ResponseKey("grpc_code", int)  # the Status code of an error response


@dataclass(frozen=True)
class CallContext:
    """Everything a bridge needs for one call; bridges never look at app state directly."""

    request: web.Request
    route: Route
    bindings: Bindings  # path variables: field path → decoded value
    query: tuple[tuple[str, str], ...]
    upstream: Upstream
    settings: Settings
    metadata: Metadata  # outgoing metadata, already built from the headers
    timeout: float | None  # deadline for the call: Grpc-Timeout or the cardinality's default
    request_id: str
    send_trailers: bool  # the client sent `TE: trailers`

    @property
    def json_options(self) -> JsonOptions:
        return self.settings.json

    @property
    def query_options(self) -> QueryOptions:
        return self.settings.query

    @property
    def multicallable(self) -> Multicallable:
        """The upstream multicallable for the route's method and cardinality."""
        return self.upstream.multicallable(self.route)

    def with_metadata(self, extra: Iterable[tuple[str, str | bytes]]) -> CallContext:
        """A copy sending ``extra`` metadata too (for example a verified identity)."""
        return dataclasses.replace(self, metadata=(*self.metadata, *extra))


Handler = Callable[[CallContext], Awaitable[web.StreamResponse]]

BRIDGES: dict[Cardinality, Handler] = {}


def register(cardinality: Cardinality, handler: Handler) -> None:
    """Serve ``cardinality`` with ``handler`` (the last registration wins)."""
    BRIDGES[cardinality] = handler


async def dispatch(ctx: CallContext) -> web.StreamResponse:
    """Run the handler registered for the route's cardinality, or answer 501."""
    handler = BRIDGES.get(ctx.route.cardinality)
    if handler is None:
        return status_response(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{ctx.route.cardinality.value} methods are not served over HTTP yet "
            f"({ctx.route.rpc_path})",
        )
    return await handler(ctx)


def status_response(
    code: grpc.StatusCode,
    message: str,
    details: Sequence[Any] = (),
    *,
    http_status: int | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> web.Response:
    """A google.rpc.Status JSON response; the HTTP status follows ``code`` unless given."""
    response = web.Response(
        status=http_status or http_status_for(code),
        body=status_json(code, message, details),
        content_type=JSON,
    )
    response[GRPC_CODE] = code.value[0]
    for name, value in headers:
        response.headers.add(name, value)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def rpc_error_response(error: grpc.aio.AioRpcError, *, send_trailers: bool) -> web.Response:
    """The Status JSON response for a failed upstream call, metadata echoed as headers."""
    trailing = metadata_pairs(error.trailing_metadata())
    status = status_from_parts(error.code(), error.details(), trailing)
    echoed = response_headers(
        metadata_pairs(error.initial_metadata()), trailing, send_trailers=send_trailers
    )
    return status_response(
        error.code(), status.message, list(status.details), headers=echoed.headers
    )
