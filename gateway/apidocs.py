"""The gateway's own API documents and an offline API reference: ``add_api_docs_routes(app)``.

Routes (see gateway/docs/openapi.md), all public:

- ``GET /openapi.json`` — the OpenAPI 3.1 document of the route table this gateway serves
  (``app[ROUTES]``), printed with its JSON options, ``servers`` ``/`` (this gateway);
- ``GET /asyncapi.json`` — the AsyncAPI 3.0 document of its streams, the host a server variable
  defaulting to the configured listen address;
- ``GET /docs`` — Swagger UI on ``/openapi.json`` (``gateway/web/apidocs``: swagger-ui-dist
  vendored as VENDOR.md says, a page and an init script); its files under ``/docs/{name}``.

Both documents are rendered once, at start-up, after the gateway has built its route table
(``on_startup`` runs after the cleanup contexts), from that very table: they cannot disagree
with the router, whatever the descriptor source. Comments become descriptions when the settings
name a descriptor set (built with ``--include_source_info``); generated modules and server
reflection carry none.

Invariants: nothing here is fetched from another origin (the page's Content-Security-Policy
allows only ``'self'``, plus ``data:`` images); a route table that serves ``GET`` on one of
these paths fails start-up, since the document would list an operation the gateway shadows.
Responses carry a strong ETag and ``Cache-Control: no-cache``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from google.protobuf import descriptor_pb2

from gateway.asyncapi import render_asyncapi
from gateway.comments import Comments
from gateway.config import Settings
from gateway.httprule import Matched, RouteTable
from gateway.openapi import DocumentInfo, dumps, render_openapi
from gateway.routes import Route
from gateway.webpage import WEB_DIR, Asset, load_assets

__all__ = [
    "ASYNCAPI_PATH",
    "DOCS_DIR",
    "DOCS_PATH",
    "OPENAPI_PATH",
    "SERVED_INFO",
    "add_api_docs_routes",
]

OPENAPI_PATH: Final = "/openapi.json"
ASYNCAPI_PATH: Final = "/asyncapi.json"
DOCS_PATH: Final = "/docs"
DOCS_DIR: Final = WEB_DIR / "apidocs"
SERVED_INFO: Final = DocumentInfo(servers=("/",))
JSON_TYPE: Final = "application/json"

OPENAPI_DOCUMENT = web.AppKey("openapi_document", Asset)
ASYNCAPI_DOCUMENT = web.AppKey("asyncapi_document", Asset)
SERVED_PATHS = web.AppKey("api_docs_paths", tuple[str, ...])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Swagger UI renders with React, which sets styles through the CSSOM (allowed by style-src
# 'self'); its icons and the CSS's images are data: URIs. No inline script, no eval.
_DOCS_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def add_api_docs_routes(app: web.Application, directory: Path = DOCS_DIR) -> None:
    """Serve both documents and the reference page; call before the API's catch-all route."""
    assets = load_assets(directory)
    page = assets.pop("index.html", None)
    if page is None:
        raise FileNotFoundError(f"no index.html in {directory}")
    files = tuple(f"{DOCS_PATH}/{name}" for name in assets)
    app[SERVED_PATHS] = (OPENAPI_PATH, ASYNCAPI_PATH, DOCS_PATH, DOCS_PATH + "/", *files)
    app.on_startup.append(_render_documents)
    app.router.add_get(OPENAPI_PATH, _document(OPENAPI_DOCUMENT), name="openapi_document")
    app.router.add_get(ASYNCAPI_PATH, _document(ASYNCAPI_DOCUMENT), name="asyncapi_document")
    app.router.add_get(DOCS_PATH, _page(page), name="api_docs")
    app.router.add_get(DOCS_PATH + "/", _to_docs)
    for name, asset in assets.items():
        app.router.add_get(f"{DOCS_PATH}/{name}", _file(asset))


def _document(key: web.AppKey[Asset]) -> Handler:
    async def document(request: web.Request) -> web.StreamResponse:
        return request.app[key].response(request)

    return document


def _page(page: Asset) -> Handler:
    async def docs(request: web.Request) -> web.StreamResponse:
        response = page.response(request)
        response.headers["Content-Security-Policy"] = _DOCS_POLICY
        return response

    return docs


def _file(asset: Asset) -> Handler:
    async def file(request: web.Request) -> web.StreamResponse:
        return asset.response(request)

    return file


async def _to_docs(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(DOCS_PATH)


async def _render_documents(app: web.Application) -> None:
    # gateway.app imports this module to call add_api_docs_routes: importing its keys at the
    # top would be circular.
    from gateway.app import ROUTES, SETTINGS

    table, settings = app[ROUTES], app[SETTINGS]
    _refuse_shadowed_routes(table, app[SERVED_PATHS])
    comments = _comments(settings)
    try:
        openapi = render_openapi(
            table, json_options=settings.json, comments=comments, info=SERVED_INFO
        )
        asyncapi = render_asyncapi(
            table, json_options=settings.json, comments=comments, info=SERVED_INFO
        )
    except ValueError as exc:
        raise RuntimeError(f"cannot render the API documents of the route table: {exc}") from exc
    app[OPENAPI_DOCUMENT] = _json_asset(openapi)
    app[ASYNCAPI_DOCUMENT] = _json_asset(_with_host_variable(asyncapi, settings.listen))


def _comments(settings: Settings) -> Comments:
    """Proto comments from the settings' descriptor set (none from modules or reflection)."""
    if settings.descriptor_set is None:
        return Comments()
    files = descriptor_pb2.FileDescriptorSet.FromString(settings.descriptor_set.read_bytes())
    return Comments.from_files(files.file)


def _refuse_shadowed_routes(table: RouteTable[Route], paths: tuple[str, ...]) -> None:
    for path in paths:
        found = table.match("GET", path)
        if isinstance(found, Matched):
            method = found.target.method.full_name
            raise RuntimeError(
                f"GET {path} is served by the API docs, but {method} is bound to it; "
                "change that method's HTTP rule"
            )


def _with_host_variable(document: dict[str, Any], listen: tuple[str, int]) -> dict[str, Any]:
    """The AsyncAPI servers' host as a ``{host}`` variable: the document is rendered before the
    gateway knows the name its clients reach it by; the default is the listen address."""
    host, port = listen
    default = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    variables = {"host": {"default": default, "description": "The gateway's host and port."}}
    for server in document["servers"].values():
        server["host"] = "{host}"
        server["variables"] = variables
    return document


def _json_asset(document: dict[str, Any]) -> Asset:
    body = dumps(document).encode()
    return Asset(body, JSON_TYPE, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
