"""The aiohttp application: routing, lifecycle, request ids, CORS, health endpoints.

``build_app(settings)`` returns an application whose state lives under ``web.AppKey``s. Its
``cleanup_ctx`` opens the upstream channels, loads the descriptors (generated modules, a
descriptor set, or server reflection), builds the route table, and closes the channels on
shutdown; any descriptor or route problem fails start-up.

Every request gets an ``X-Request-Id`` (the client's when it sent a sane one), sent upstream and
echoed on the response, streaming ones included. A generated id is this process's random
64-bit prefix (16 hex digits, drawn once at start-up) followed by a per-process counter: unique
within the process, and across processes with overwhelming probability, but predictable from an
earlier id of the same process, so it serves correlation, never as a secret. An unexpected
exception answers 500 with a Status body naming the request id (and is logged), never a bare
text page. CORS headers go only to allowed origins. Paths that match no route answer 404, a
known path with the wrong method answers 405 with ``Allow``; both with google.rpc.Status
bodies. A GET with ``Upgrade: websocket`` is routed to a streaming method bound to that path
whatever its rule's verb.

Per-request cost: the request id, the CORS preflight and the 500 guard are one middleware
(``_front_door``, one frame instead of a chain of three); what a request needs from the
settings (deadline policy, allowed origins, the tables) is gathered once per application
(``_Serving``, ``_Cors``), so a request does no set-up beyond reading its own headers.

Auth (gateway/gate.py): every matched request, of every cardinality, is authenticated and
authorised against its route's AuthRule before any bridge runs (401/400/403 with
``WWW-Authenticate``); the bridges get metadata already stripped of client-sent identity keys
and carrying the verified identity. The health endpoints (and any path no route serves) are
public; routes without an AuthRule are denied and logged at start-up.

Tracing (gateway/telemetry.py): the client's ``traceparent``/``tracestate`` always go upstream
(gateway/metadata.py). When tracing is configured at start-up (``telemetry.tracer`` is not None
when ``build_app`` runs), ``_traced_front_door`` replaces ``_front_door``: one SERVER span per
request, parented on the client's trace context, current while the request is handled, named
after the route once ``_serve`` matched it, ended with the response's status (and the gRPC code
of a Status answer, ``gateway.bridges.GRPC_CODE``); ``_call_context`` then puts the span's
context in the upstream metadata instead of the client's, so the backend's span is its child.
Without tracing a request pays two ``is None`` tests for all this (≈ 15 ns).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

import gateway.bridges.rest  # noqa: F401  (registers the UNARY bridge)
from gateway.apidocs import add_api_docs_routes
from gateway.auth import AuthError
from gateway.bridges import GRPC_CODE, CallContext, dispatch, status_response
from gateway.bridges.streaming import (
    install as install_streaming,
)  # registers the streaming bridges
from gateway.config import Settings
from gateway.descriptors import Services, from_descriptor_set, from_modules, from_reflection
from gateway.gate import admit, admitted_query, auth_context, log_denied, refusal, upstream_metadata
from gateway.httprule import Matched, MethodNotAllowed, PathError, RouteTable
from gateway.metadata import MetadataError, parse_grpc_timeout, request_metadata, wants_trailers
from gateway.routes import Route, build_route_table, websocket_table
from gateway.telemetry import HttpSpans, tracer, with_trace_context
from gateway.upstream import DeadlinePolicy, Upstream
from gateway.webpage import add_web_routes

__all__ = [
    "REQUEST_ID",
    "ROUTES",
    "SERVER_SPAN",
    "SETTINGS",
    "UPSTREAM",
    "WEBSOCKET_ROUTES",
    "build_app",
]

SETTINGS = web.AppKey("settings", Settings)
UPSTREAM = web.AppKey("upstream", Upstream)
ROUTES = web.AppKey("routes", RouteTable[Route])
WEBSOCKET_ROUTES = web.AppKey("websocket_routes", RouteTable[Route])
REQUEST_ID = web.RequestKey("request_id", str)
SERVER_SPAN = web.RequestKey("server_span", Span)  # set only when tracing is on

_LOG = logging.getLogger(__name__)
_SANE_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_EXPOSED_HEADERS = "X-Request-Id, WWW-Authenticate"  # a browser app reads why it got 401
_PREFLIGHT_MAX_AGE = "600"

_REQUEST_ID_PREFIX = secrets.token_hex(8)  # 64 random bits per process
_REQUEST_COUNTER = itertools.count(1)

Matcher = Callable[[str, str], Matched[Route] | MethodNotAllowed | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Cors:
    """The CORS settings as a request checks them."""

    origins: frozenset[str]
    any_origin: bool
    allow_credentials: bool

    @classmethod
    def of(cls, settings: Settings) -> _Cors:
        origins = frozenset(settings.cors_origins)
        return cls(origins, "*" in origins, settings.cors_allow_credentials)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins


@dataclass(frozen=True, slots=True)
class _Serving:
    """What ``_serve`` needs from the application, gathered once when the routes are built."""

    settings: Settings
    upstream: Upstream
    routes: RouteTable[Route]
    websocket_routes: RouteTable[Route]
    deadlines: DeadlinePolicy
    tracing: HttpSpans | None  # None: tracing is off


_SERVING = web.AppKey("serving", _Serving)
_CORS = web.AppKey("cors", _Cors)
_TRACING = web.AppKey("tracing", HttpSpans)  # set only when tracing is on


def build_app(settings: Settings) -> web.Application:
    """The gateway application for ``settings`` (start it with AppRunner or ``web.run_app``).

    It traces requests when tracing is configured now (gateway/telemetry.py)."""
    spans_with = tracer("gateway")
    app = web.Application(
        middlewares=[_front_door if spans_with is None else _traced_front_door],
        client_max_size=settings.max_body_bytes + 1,
    )
    if spans_with is not None:
        app[_TRACING] = HttpSpans(spans_with)
    app[SETTINGS] = settings
    app[_CORS] = _Cors.of(settings)
    install_streaming(app, settings.streams)
    app.cleanup_ctx.append(auth_context(settings.auth))
    app.cleanup_ctx.append(_gateway_ctx)
    app.on_response_prepare.append(_decorate_response)
    if spans_with is not None:
        app.on_response_prepare.append(_trace_status)
    app.router.add_get("/healthz", _healthz, allow_head=False)
    app.router.add_get("/readyz", _readyz, allow_head=False)
    add_web_routes(app)  # the chat page and cookie sign-in; before the catch-all shadows "/"
    add_api_docs_routes(app)  # /openapi.json, /asyncapi.json, /docs
    app.router.add_route("*", r"/{tail:[\s\S]*}", _serve)  # [\s\S]: %0A decodes to a newline
    return app


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    upstream = await Upstream.connect(settings.backend_addresses(), tunnel=settings.tunnel)
    try:
        services, origin = await _load_services(settings, upstream)
        table = build_route_table(
            services,
            backend_of=lambda service: _backend_of(settings, origin, service),
            auto_map=settings.auto_map,
        )
        if settings.auth is not None:
            log_denied(table)
        app[UPSTREAM] = upstream
        app[ROUTES] = table
        app[WEBSOCKET_ROUTES] = websocket_table(table)
        deadlines = DeadlinePolicy(unary=settings.unary_timeout, streaming=settings.stream_timeout)
        app[_SERVING] = _Serving(
            settings, upstream, table, app[WEBSOCKET_ROUTES], deadlines, app.get(_TRACING)
        )
        yield
    finally:
        await upstream.close()


async def _load_services(settings: Settings, upstream: Upstream) -> tuple[Services, dict[str, str]]:
    """The services to expose, and for reflected ones the backend that reported them."""
    if settings.descriptor_set is not None:
        return from_descriptor_set(settings.descriptor_set), {}
    if not settings.reflect:
        return from_modules(settings.modules), {}
    seen: dict[str, ServiceDescriptor] = {}
    origin: dict[str, str] = {}
    for backend in upstream.backends:
        channel = upstream.channel(backend)
        for service in await from_reflection(channel, deadline=settings.reflection_timeout):
            seen.setdefault(service.full_name, service)
            origin.setdefault(service.full_name, backend)
    return tuple(seen.values()), origin


def _backend_of(settings: Settings, origin: dict[str, str], service: ServiceDescriptor) -> str:
    if service.full_name in settings.backends or service.full_name not in origin:
        return settings.backend_for(service.full_name)
    return origin[service.full_name]


# --- request ids and CORS -------------------------------------------------------------------


@web.middleware
async def _front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request id, the CORS preflight and the 500 guard, for every route."""
    request[REQUEST_ID] = _request_id(request.headers.get("X-Request-Id"))
    try:
        if request.method == "OPTIONS":
            origin = request.headers.get("Origin")
            if origin and "Access-Control-Request-Method" in request.headers:
                return _preflight(request, origin)
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as error:
        return _internal_error(request, error)


@web.middleware
async def _traced_front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``_front_door`` inside the request's SERVER span (tracing on), current meanwhile."""
    spans = request.app[_TRACING]
    span = spans.start(
        request.method, request.raw_path.partition("?")[0], request.scheme, request.headers
    )
    request[SERVER_SPAN] = span
    token = otel_context.attach(trace.set_span_in_context(span))
    code: int | None = None
    try:
        response = await _front_door(request, handler)
        spans.responded(span, response.status)  # a stream's was recorded as it was prepared
        code = response.get(GRPC_CODE)
        return response
    except web.HTTPException as exc:
        spans.responded(span, exc.status)
        raise
    finally:  # also when the client went away (aiohttp cancelled the handler)
        route = request.match_info.route
        if route.handler is not _serve and route.resource is not None:  # /healthz, /docs…
            spans.route_other(span, request.method, route.resource.canonical)
        spans.finish(span, code)
        otel_context.detach(token)


async def _trace_status(request: web.Request, response: web.StreamResponse) -> None:
    """A streaming response's status, recorded as its headers go (tracing on)."""
    span = request.get(SERVER_SPAN)
    if span is not None:
        HttpSpans.responded(span, response.status)


def _request_id(sent: str | None) -> str:
    """The client's id when it is sane, else a new one (see the module docstring)."""
    if sent is not None and _SANE_REQUEST_ID.match(sent):
        return sent
    return f"{_REQUEST_ID_PREFIX}{next(_REQUEST_COUNTER):08x}"


def _internal_error(request: web.Request, error: Exception) -> web.Response:
    """A bug answers 500 with a Status body naming the request id, never a bare text page."""
    request_id = request[REQUEST_ID]
    span = request.get(SERVER_SPAN)
    if span is not None:
        span.record_exception(error)
    _LOG.exception(
        "unhandled error in %s %s (request %s)", request.method, request.path, request_id
    )
    return status_response(
        grpc.StatusCode.INTERNAL, f"internal gateway error (request id {request_id})"
    )


def _preflight(request: web.Request, origin: str) -> web.Response:
    if not request.app[_CORS].allows(origin):
        return status_response(
            grpc.StatusCode.PERMISSION_DENIED, f"CORS origin {origin!r} is not allowed"
        )
    wanted = request.headers["Access-Control-Request-Method"].upper()
    found = _matcher(request)(wanted, request.raw_path.partition("?")[0])
    if found is None:
        return status_response(grpc.StatusCode.NOT_FOUND, f"no route for {request.path}")
    methods = {wanted} if isinstance(found, Matched) else set(found.allowed)
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods))
    requested_headers = request.headers.get("Access-Control-Request-Headers")
    if requested_headers:
        response.headers["Access-Control-Allow-Headers"] = requested_headers
    response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
    return response


async def _decorate_response(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id
    origin = request.headers.get("Origin")
    if not origin:
        return
    cors = request.app[_CORS]
    if cors.allows(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
        if cors.allow_credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"


# --- health ----------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    names = upstream.backends
    states = await asyncio.gather(*(upstream.health(name) for name in names))
    report = dict(zip(names, states, strict=True))
    failing = [f"{name} is {state}" for name, state in report.items() if state != "SERVING"]
    if failing:
        return status_response(grpc.StatusCode.UNAVAILABLE, "not ready: " + "; ".join(failing))
    return web.json_response({"status": "ready", "backends": report})


# --- the API ---------------------------------------------------------------------------------


def _is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


def _matcher(request: web.Request, serving: _Serving | None = None) -> Matcher:
    if serving is None:
        serving = request.app[_SERVING]
    routes = serving.routes
    if not _is_websocket(request):
        return routes.match
    sockets = serving.websocket_routes

    def match(method: str, path: str) -> Matched[Route] | MethodNotAllowed | None:
        found = sockets.match(method, path)
        return found if isinstance(found, Matched) else routes.match(method, path)

    return match


async def _serve(request: web.Request) -> web.StreamResponse:
    serving = request.app[_SERVING]
    path = request.raw_path.partition("?")[0]
    try:
        found = _matcher(request, serving)(request.method, path)
    except PathError as exc:
        return status_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if found is None:
        return status_response(
            grpc.StatusCode.NOT_FOUND, f"no route for {request.method} {request.path}"
        )
    if isinstance(found, MethodNotAllowed):
        allowed = ", ".join(sorted(found.allowed))
        return status_response(
            grpc.StatusCode.UNIMPLEMENTED,
            f"method {request.method} is not allowed on {request.path}; allowed: {allowed}",
            http_status=405,
            headers=[("Allow", allowed)],
        )
    if serving.tracing is not None:
        serving.tracing.route(request[SERVER_SPAN], request.method, found.target)
    try:
        await admit(request, found.target)
    except AuthError as error:
        return refusal(error)
    try:
        ctx = _call_context(request, found, serving)
    except MetadataError as exc:
        return status_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return await dispatch(ctx)


def _call_context(request: web.Request, found: Matched[Route], serving: _Serving) -> CallContext:
    settings = serving.settings
    headers = request.headers
    request_id = request[REQUEST_ID]
    timeout_header = headers.get("Grpc-Timeout")
    requested = parse_grpc_timeout(timeout_header) if timeout_header is not None else None
    metadata = upstream_metadata(
        request,
        request_metadata(
            headers.items(),
            allowlist=settings.header_allowlist,
            peer=request.remote,
            host=headers.get("Host"),
            request_id=request_id,
        ),
    )
    if serving.tracing is not None:  # the backend's span continues the gateway's, not the client's
        metadata = with_trace_context(metadata, request[SERVER_SPAN])
    # no query string, no parameters: skip parsing one (the common case for REST calls)
    query = admitted_query(request) if request.rel_url.raw_query_string else ()
    return CallContext(
        request=request,
        route=found.target,
        bindings=found.bindings,
        query=query,
        upstream=serving.upstream,
        settings=settings,
        metadata=metadata,
        timeout=serving.deadlines.timeout_for(found.target.cardinality, requested),
        request_id=request_id,
        send_trailers=wants_trailers(headers),
    )
