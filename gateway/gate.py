"""The auth gate in front of dispatch: the aiohttp side of gateway/access.py.

``auth_context(config)`` is a ``cleanup_ctx`` that opens the shared ``Authenticator`` (and its
JWKS refresher) for the application's lifetime; with ``config`` None (``--no-auth``) it logs a
loud warning instead and nothing is checked. ``admit(request, route)`` decides one matched
request, whatever the route's cardinality, before any bridge runs: it picks the transport (which
decides the token sources: ``Authorization`` everywhere; the ``bearer`` subprotocol, the cookie
and the opt-in query parameter only for WebSocket / SSE), raises ``AuthError`` or stores the
``Access`` under ``ACCESS`` on the request for the bridges (the WebSocket subprotocol to echo,
the seconds left before the token expires). ``refusal(error)`` is the answer to an ``AuthError``.
``access_log_class(config)`` is the aiohttp access logger to serve the application with: it
writes aiohttp's usual line with the value of the token's query parameter replaced by
``REDACTED`` (gateway/credentials.py ``redact_query``). With aiohttp's default format (what
``python -m gateway`` uses) the line and the record's ``extra`` fields are built directly, the
start time formatted once per second; any other format goes through aiohttp's AccessLogger.

Invariants: identity keys a client sent (``x-user-id``, ``x-roles``, ``x-permissions``,
``x-token-issued-at``, the configured ``strip_headers``; as headers or ``Grpc-Metadata-*``) never
reach a backend, auth on or off; with auth on, ``authorization`` goes upstream only as the
verified token, next to the verified identity; the token's query parameter never reaches the
transcoder; no response or log line contains a token.
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import ClassVar

import grpc
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from yarl import URL

from gateway.access import Access, check_access
from gateway.auth import Authenticator, AuthError
from gateway.authconfig import AuthConfig, open_authenticator
from gateway.bridges import status_response
from gateway.credentials import (
    TokenSources,
    Transport,
    redact_query,
    without_token_param,
)
from gateway.httprule import RouteTable
from gateway.identity_metadata import MetadataEntry, stripped_keys
from gateway.routes import Cardinality, Route

__all__ = [
    "ACCESS",
    "AUTHENTICATOR",
    "AUTH_CONFIG",
    "RedactingAccessLogger",
    "access_log_class",
    "admit",
    "admitted_query",
    "auth_context",
    "denied_routes",
    "log_denied",
    "logged_query",
    "refusal",
    "transport_of",
    "upstream_metadata",
]

_LOG = logging.getLogger("gateway.auth")

AUTHENTICATOR = web.AppKey("authenticator", Authenticator)  # absent when auth is off
AUTH_CONFIG = web.AppKey("auth_config", AuthConfig)  # absent when auth is off
ACCESS = web.RequestKey("access", Access)
ANONYMOUS = Access(None, None)
_OFF_STRIP = stripped_keys() - {"authorization"}  # auth off: the backend may still check tokens


def auth_context(
    config: AuthConfig | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that holds the Authenticator for ``config`` (None: auth off)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if config is None:
            _LOG.warning(
                "AUTHENTICATION IS OFF (--no-auth): every request is let in without a token"
            )
            yield
            return
        async with open_authenticator(config) as authenticator:
            app[AUTH_CONFIG] = config
            app[AUTHENTICATOR] = authenticator
            _LOG.info("auth on: bearer tokens are verified and the RBAC policy is enforced")
            yield

    return context


def denied_routes(table: RouteTable[Route]) -> list[str]:
    """``HTTP-METHOD template (rpc path)`` of every route without an auth rule (denied)."""
    return [
        f"{verb} {template} ({route.rpc_path})"
        for verb, template, route in table.routes()
        if route.auth is None
    ]


def log_denied(table: RouteTable[Route]) -> None:
    for entry in denied_routes(table):
        _LOG.warning("no auth rule, denied to every caller: %s", entry)


def transport_of(request: web.Request, route: Route) -> Transport:
    """How ``request`` reaches ``route``: it decides which token sources count."""
    if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
        return Transport.WEBSOCKET
    accept = request.headers.get("Accept", "")
    if route.cardinality is Cardinality.SERVER_STREAMING and "text/event-stream" in accept:
        return Transport.SSE
    return Transport.HTTP


def _sources(request: web.Request) -> TokenSources:
    config = request.app.get(AUTH_CONFIG)
    return TokenSources() if config is None else config.token_sources


async def admit(request: web.Request, route: Route) -> Access:
    """Decide ``request`` for ``route``; raises ``AuthError``. Stores the Access on the request."""
    authenticator = request.app.get(AUTHENTICATOR)
    if authenticator is None:
        access = ANONYMOUS
    else:
        access = await check_access(
            authenticator,
            route.auth,
            request.headers,
            transport_of(request, route),
            _sources(request),
            query=tuple(request.query.items()),
        )
    request[ACCESS] = access
    return access


def admitted_query(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The request's query without the token parameter (it is no field of any message)."""
    param = _sources(request).query_param
    return tuple(without_token_param(tuple(request.query.items()), param))


def upstream_metadata(
    request: web.Request, base: Iterable[MetadataEntry]
) -> tuple[MetadataEntry, ...]:
    """``base`` (made from the client's headers) without identity keys, plus the verified ones."""
    found: Access | None = request.get(ACCESS)
    access = ANONYMOUS if found is None else found
    config = request.app.get(AUTH_CONFIG)
    if config is None:
        return access.metadata(base, _OFF_STRIP)
    return access.metadata(base, config.stripped_keys)


def refusal(error: AuthError, headers: Sequence[tuple[str, str]] = ()) -> web.Response:
    """401/400/403 with a google.rpc.Status body and the RFC 6750 ``WWW-Authenticate``."""
    response = status_response(
        grpc.StatusCode[error.grpc_status],
        error.description,
        http_status=error.http_status,
        headers=headers,
    )
    response.headers["WWW-Authenticate"] = error.www_authenticate
    return response


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log (same ``log_format``) with the token query parameter redacted.

    aiohttp constructs the class itself, so the parameter is a class attribute: use the
    subclass ``access_log_class(config)`` returns. A query that would still show the
    parameter's value after redaction (an oddly encoded name) is logged as ``REDACTED`` whole.
    With the default format the line is written without aiohttp's generic formatter (the same
    text and ``extra``: it is the per-request path).
    """

    query_param: ClassVar[str | None] = None
    __slots__ = ("_default_format", "_line")

    def __init__(self, logger: logging.Logger, log_format: str = AccessLogger.LOG_FORMAT) -> None:
        super().__init__(logger, log_format)
        self._line = AccessLogger(logger, log_format)
        self._default_format = log_format == AccessLogger.LOG_FORMAT

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        shown = self._redacted(request)
        if self._default_format:
            self._log_default(shown, response, time)
        else:
            self._line.log(shown, response, time)

    def _log_default(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        """``%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"``, as aiohttp writes it."""
        try:
            remote = request.remote
            address = "-" if remote is None else remote
            started = _START_STAMP.at(clock.time() - time)
            version = request.version
            first_line = f"{request.method} {request.path_qs} HTTP/{version.major}.{version.minor}"
            referer = request.headers.get("Referer", "-")
            agent = request.headers.get("User-Agent", "-")
            status = response.status
            size = response.body_length
            extra = {
                "remote_address": address,
                "request_start_time": started,
                "first_request_line": first_line,
                "response_status": status,
                "response_size": size,
                "request_header": {"Referer": referer, "User-Agent": agent},
            }
            line = f'{address} {started} "{first_line}" {status} {size} "{referer}" "{agent}"'
            self.logger.info(line, extra=extra)
        except Exception:
            self.logger.exception("Error in logging")

    def _redacted(self, request: web.BaseRequest) -> web.BaseRequest:
        param = self.query_param
        if param is None:
            return request
        query = request.rel_url.raw_query_string
        if not query:
            return request
        logged = logged_query(query, param)
        if logged == query:
            return request
        url = URL.build(path=request.rel_url.raw_path, query_string=logged, encoded=True)
        return request.clone(rel_url=url)


class _SecondStamp:
    """aiohttp's ``%t`` (``[21/Nov/2026:15:11:05 +0000]``, local time), formatted once a second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def at(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._text = clock.strftime("[%d/%b/%Y:%H:%M:%S %z]", clock.localtime(second))
            self._second = second
        return self._text


_START_STAMP = _SecondStamp()


def logged_query(query_string: str, param: str) -> str:
    """``query_string`` as the access log shows it: the value of ``param`` redacted."""
    return redact_query(query_string, param)


def access_log_class(config: AuthConfig | None) -> type[AbstractAccessLogger]:
    """The access logger for a gateway with ``config`` (None: auth off, nothing to redact)."""

    class ConfiguredAccessLogger(RedactingAccessLogger):
        query_param = None if config is None else config.query_param

    return ConfiguredAccessLogger
