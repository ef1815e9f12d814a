"""The browser chat page and its cookie sign-in: ``add_web_routes(app)``.

Routes (see gateway/docs/webpage.md):

- ``GET /`` — the page (``gateway/web/index.html``);
- ``GET /web/{asset}`` — the page's scripts and styles: exactly the files of ``gateway/web``
  read when the routes are added, so no request can name any other file;
- ``POST /auth/session`` with ``Authorization: Bearer <token>`` — verifies the token with the
  application's ``Authenticator`` and answers the caller's identity as JSON, setting the
  token as the HttpOnly, ``SameSite=Strict``, ``Path=/`` cookie the gateway reads for SSE and
  WebSocket requests (browsers' EventSource cannot send headers). The cookie lives until the
  token's ``exp`` at most and is ``Secure`` when the request came over HTTPS. A bad token is
  401 (400 for malformed credentials) with a google.rpc.Status body and ``WWW-Authenticate``.
  With auth off the answer says so and no cookie is set;
- ``DELETE /auth/session`` — clears the cookie.

Invariants: the token is never echoed in a body or a log line; the page and its assets carry a
Content-Security-Policy allowing only same-origin scripts, styles and connections; the API's
catch-all route must be added after these (``add_web_routes`` refuses to run otherwise, since
the catch-all would shadow ``/``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import grpc
from aiohttp import web

from gateway.auth import AuthError, Identity, MissingCredentials, TokenExpired
from gateway.bridges import status_response
from gateway.credentials import TokenSources, Transport, find_token
from gateway.gate import AUTH_CONFIG, AUTHENTICATOR, refusal

__all__ = ["SESSION_PATH", "WEB_DIR", "Asset", "add_web_routes", "load_assets"]

WEB_DIR: Final = Path(__file__).with_name("web")
SESSION_PATH: Final = "/auth/session"
_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_NO_STORE: Final = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Asset:
    """One file of the page, held in memory with its content type and a strong ETag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, _CONTENT_TYPES[path.suffix], f'"{digest}"')

    def response(self, request: web.Request) -> web.Response:
        headers = {**_PAGE_HEADERS, "ETag": self.etag}
        wanted = {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}
        if self.etag in wanted or "*" in wanted:
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.body, headers={**headers, "Content-Type": self.content_type})


def load_assets(directory: Path = WEB_DIR) -> dict[str, Asset]:
    """Every servable file of ``directory`` by name (``index.html`` included)."""
    return {
        path.name: Asset.read(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in _CONTENT_TYPES
    }


def add_web_routes(app: web.Application, directory: Path = WEB_DIR) -> None:
    """Serve the page at ``/``, its assets under ``/web/`` and the cookie sign-in endpoint.

    Call before the API's catch-all route is added (``build_app`` does)."""
    _refuse_shadowed_root(app)
    assets = load_assets(directory)
    if "index.html" not in assets:
        raise FileNotFoundError(f"no index.html in {directory}")

    async def page(request: web.Request) -> web.Response:
        return assets["index.html"].response(request)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            name = request.match_info["name"]
            return status_response(grpc.StatusCode.NOT_FOUND, f"no web asset {name!r}")
        return found.response(request)

    app.router.add_get("/", page, name="webpage")
    app.router.add_get("/web/{name}", asset, name="webpage_asset")
    session = app.router.add_resource(SESSION_PATH, name="session")
    session.add_route("POST", _sign_in)
    session.add_route("DELETE", _sign_out)


def _refuse_shadowed_root(app: web.Application) -> None:
    for resource in app.router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        if info.get("path") == "/" or (pattern is not None and pattern.fullmatch("/")):
            raise RuntimeError(
                f"add_web_routes: route {resource.canonical!r} already serves '/'; "
                "add the web routes before the API's catch-all route"
            )


# --- the session cookie --------------------------------------------------------------------


def _cookie_name(app: web.Application) -> str:
    config = app.get(AUTH_CONFIG)
    return (config.token_sources if config is not None else TokenSources()).cookie_name


async def _sign_in(request: web.Request) -> web.StreamResponse:
    authenticator = request.app.get(AUTHENTICATOR)
    if authenticator is None:
        return web.json_response({"authentication": "off"}, headers=_NO_STORE)
    try:
        found = find_token(request.headers, Transport.HTTP)
        if found is None:
            raise MissingCredentials("a bearer token is required")
        identity = await authenticator.authenticate(found.token)
        seconds_left = _seconds_left(identity)
    except AuthError as error:
        return refusal(error, headers=tuple(_NO_STORE.items()))
    response = web.json_response(_identity_json(identity), headers=_NO_STORE)
    response.set_cookie(
        _cookie_name(request.app),
        found.token,
        max_age=seconds_left,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


def _seconds_left(identity: Identity) -> int | None:
    """Whole seconds until the token expires (None: no ``exp``); expired is an error."""
    if identity.expires_at is None:
        return None
    left = identity.expires_at - int(time.time())
    if left <= 0:
        raise TokenExpired()
    return left


def _identity_json(identity: Identity) -> dict[str, object]:
    body: dict[str, object] = {
        "authentication": "on",
        "user": identity.user,
        "roles": sorted(identity.roles),
    }
    if identity.expires_at is not None:
        expires = datetime.fromtimestamp(identity.expires_at, UTC)
        body["expireTime"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    return body


async def _sign_out(request: web.Request) -> web.StreamResponse:
    response = web.Response(status=204, headers=_NO_STORE)
    response.del_cookie(
        _cookie_name(request.app), path="/", httponly=True, samesite="Strict", secure=request.secure
    )
    return response
