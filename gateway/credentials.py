"""Where a request's bearer token comes from (sans-IO pure functions over headers and query).

Sources, in order of precedence:

1. ``Authorization: Bearer <token>`` — every transport.
2. ``Sec-WebSocket-Protocol: bearer, <token>`` — WebSocket only; the server must then accept the
   connection echoing the subprotocol ``bearer`` (``FoundToken.subprotocol``), never the token.
3. A cookie (default ``switchboard_token``, meant to be HttpOnly) — SSE and WebSocket only, so a
   cookie never authorises a REST call (no CSRF through plain form posts).
4. A query parameter — only when configured (off by default), SSE and WebSocket only. The
   parameter must be removed before transcoding and redacted in logs (``redact_query``).

Invariants: at most one ``Authorization`` header; a ``Bearer`` header with no or a malformed
token is ``InvalidRequest``; no error message contains a token.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from gateway.auth import InvalidRequest, MissingCredentials

__all__ = [
    "BEARER_SUBPROTOCOL",
    "FoundToken",
    "TokenSources",
    "Transport",
    "bearer_token",
    "cookie_token",
    "find_token",
    "redact_query",
    "subprotocol_token",
    "without_bearer_subprotocol",
    "without_token_param",
]

BEARER_SUBPROTOCOL = "bearer"
REDACTED = "REDACTED"
# RFC 6750 b64token: what a JWT (base64url segments joined by dots) always matches.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


class Transport(enum.Enum):
    """How the request reaches the gateway; decides which token sources count."""

    HTTP = "http"  # REST and NDJSON
    SSE = "sse"
    WEBSOCKET = "websocket"


@dataclass(frozen=True)
class TokenSources:
    """The configurable sources: cookie name and (opt-in) query parameter name."""

    cookie_name: str = "switchboard_token"
    query_param: str | None = None


@dataclass(frozen=True)
class FoundToken:
    """A token and where it came from; ``subprotocol`` is what the WebSocket must echo."""

    token: str
    source: str  # "authorization" | "subprotocol" | "cookie" | "query"
    subprotocol: str | None = None

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"FoundToken(source={self.source!r}, subprotocol={self.subprotocol!r})"


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive; works for plain dicts and multidicts)."""
    return [value for key, value in headers.items() if key.lower() == name]


def _checked(token: str, where: str) -> str:
    if not _B64TOKEN.match(token):
        raise InvalidRequest(f"{where} does not carry a well-formed token")
    return token


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization`` value; other schemes are ``MissingCredentials``."""
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingCredentials("the Authorization scheme must be Bearer")
    token = rest.strip()
    if not token:
        raise InvalidRequest("the Authorization header has no token")
    return _checked(token, "the Authorization header")


def subprotocol_token(protocols: Sequence[str]) -> str | None:
    """The token offered as ``bearer, <token>`` in a subprotocol list, or None."""
    if BEARER_SUBPROTOCOL not in protocols:
        return None
    at = protocols.index(BEARER_SUBPROTOCOL)
    if at + 1 >= len(protocols):
        raise InvalidRequest("the 'bearer' subprotocol must be followed by the token")
    return _checked(protocols[at + 1], "the Sec-WebSocket-Protocol header")


def without_bearer_subprotocol(protocols: Sequence[str]) -> list[str]:
    """The offered subprotocols minus ``bearer`` and its token: what the application negotiates.

    Negotiate among these; when none is chosen and the token came by subprotocol, echo
    ``bearer`` (a browser fails a connection whose offered subprotocols get no answer).
    """
    if BEARER_SUBPROTOCOL not in protocols:
        return list(protocols)
    at = protocols.index(BEARER_SUBPROTOCOL)
    return [*protocols[:at], *protocols[at + 2 :]]


def cookie_token(cookie_headers: Iterable[str], name: str) -> str | None:
    """The value of cookie ``name`` from ``Cookie`` header values (first one wins)."""
    for header in cookie_headers:
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key.strip() == name:
                return _checked(value.strip().strip('"'), f"cookie {name!r}")
    return None


def find_token(
    headers: Mapping[str, str],
    transport: Transport,
    sources: TokenSources = TokenSources(),
    *,
    query: Sequence[tuple[str, str]] = (),
) -> FoundToken | None:
    """The request's token by the precedence in the module docstring, or None if it sent none."""
    authorizations = _values(headers, "authorization")
    if len(authorizations) > 1:
        raise InvalidRequest("more than one Authorization header")
    if authorizations:
        return FoundToken(bearer_token(authorizations[0]), "authorization")
    if transport is Transport.HTTP:
        return None
    if transport is Transport.WEBSOCKET:
        offered = [
            p.strip() for v in _values(headers, "sec-websocket-protocol") for p in v.split(",")
        ]
        token = subprotocol_token(offered)
        if token is not None:
            return FoundToken(token, "subprotocol", BEARER_SUBPROTOCOL)
    token = cookie_token(_values(headers, "cookie"), sources.cookie_name)
    if token is not None:
        return FoundToken(token, "cookie")
    if sources.query_param is not None:
        found = [value for key, value in query if key == sources.query_param]
        if len(found) > 1:
            raise InvalidRequest(f"query parameter {sources.query_param!r} given more than once")
        if found:
            return FoundToken(
                _checked(found[0], f"query parameter {sources.query_param!r}"), "query"
            )
    return None


def without_token_param(
    query: Sequence[tuple[str, str]], param: str | None
) -> list[tuple[str, str]]:
    """The query without the token parameter (it is no field of the request message)."""
    return [(key, value) for key, value in query if param is None or key != param]


def redact_query(query_string: str, param: str | None) -> str:
    """``query_string`` with the token parameter's value replaced, for access logs."""
    if param is None or not query_string:
        return query_string
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if all(key != param for key, _ in pairs):  # names compared decoded: `access%5Ftoken` too
        return query_string
    redacted = [(key, REDACTED if key == param else value) for key, value in pairs]
    return urlencode(redacted, quote_via=quote)
