"""The gateway's served API documents and its offline API reference (gateway/apidocs.py).

Against the real service and the real gateway with auth on: /openapi.json is exactly the
document of the live route table (comments included when the gateway reads a descriptor set
with source info) and valid; /asyncapi.json is valid for @asyncapi/parser; /docs and its files
reference nothing outside the gateway. Then Swagger UI runs in a real headless Chromium
(tests/gateway/browser/docs.mjs) with every other origin blocked: it renders every operation,
authorizes with a bearer token and runs "Try it out" against the same gateway.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from gateway.apidocs import add_api_docs_routes
from gateway.app import ROUTES, SETTINGS
from gateway.authconfig import AuthConfig
from gateway.comments import Comments
from gateway.config import Settings
from gateway.httprule import PathTemplate, RouteTable
from gateway.openapi import DocumentInfo, operation_ids, render_openapi
from gateway.openapi_cli import compile_descriptor_set
from gateway.routes import Route
from gateway.transcode import JsonOptions
from services.auth import mint_dev_token
from services.testing import running_server
from tests.gateway.node_tools import (
    BROWSER,
    CHROMIUM,
    NPM_LIMIT,
    ensure_node_modules,
    require_chromium,
    run_in_sdk,
    run_node,
    tool,
)
from tests.gateway.stream_gateway import Gateway, running_gateway

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_LIMIT = 40.0
SERVED = DocumentInfo(servers=("/",))
DOCS_FILES = {"/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/init.js"}
_REMOTE = re.compile(r"https?://|//[a-z0-9]", re.IGNORECASE)


@pytest.fixture
def dev_auth(monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    """`--dev-auth` as `make run` uses it, with a secret of this test's own."""
    monkeypatch.setenv("SWITCHBOARD_DEV_SECRET", secrets.token_urlsafe(48))
    return AuthConfig(dev=True)


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Switchboard's protos compiled with comments, as a deployment would ship them."""
    path = tmp_path_factory.mktemp("descriptors") / "switchboard.binpb"
    compile_descriptor_set(ROOT / "proto", path)
    return path


@asynccontextmanager
async def switchboard(auth: AuthConfig, **settings: Any) -> AsyncIterator[Gateway]:
    async with running_server(auth=auth) as service:
        configured = Settings(backends={"*": (service.address,)}, auth=auth, **settings)
        async with running_gateway(configured) as gateway:
            yield gateway


@pytest.fixture
async def gateway(dev_auth: AuthConfig, descriptor_set: Path) -> AsyncIterator[Gateway]:
    async with switchboard(dev_auth, descriptor_set=descriptor_set) as running:
        yield running


async def fetch_json(gateway: Gateway, path: str) -> dict[str, Any]:
    async with gateway.session.get(gateway.url(path)) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        assert response.headers["Cache-Control"] == "no-cache"
        document: dict[str, Any] = await response.json()
        return document


def comments_of(path: Path) -> Comments:
    return Comments.from_files(descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file)


# --- the documents -------------------------------------------------------------------------


async def test_openapi_json_is_the_live_route_table_with_comments_and_valid(
    gateway: Gateway, descriptor_set: Path
) -> None:
    served = await fetch_json(gateway, "/openapi.json")  # no token: the document is public
    table = gateway.runner.app[ROUTES]
    expected = render_openapi(table, comments=comments_of(descriptor_set), info=SERVED)
    assert served == expected
    validate(served)
    assert served["servers"] == [{"url": "/"}]
    routes = [route for _, _, route in table.routes()]
    listed = {
        (verb.upper(), operation["operationId"])
        for operations in served["paths"].values()
        for verb, operation in operations.items()
    }
    assert listed == {
        (route.http_method, operation_id)
        for route, operation_id in zip(routes, operation_ids(routes), strict=True)
    }
    assert len(listed) == len(table)
    rooms = next(tag for tag in served["tags"] if tag["name"] == "RoomService")
    assert rooms["description"]  # the service's proto comment
    assert served["paths"]["/v1/rooms"]["get"]["summary"] == (
        "Lists rooms in name order, a page at a time."
    )


async def test_the_document_follows_the_gateways_json_options(dev_auth: AuthConfig) -> None:
    proto_names = JsonOptions(use_proto_names=True)
    async with switchboard(dev_auth, json=proto_names) as gateway:
        served = await fetch_json(gateway, "/openapi.json")
        table = gateway.runner.app[ROUTES]
    assert served == render_openapi(table, json_options=proto_names, info=SERVED)
    names = [parameter["name"] for parameter in served["paths"]["/v1/rooms"]["get"]["parameters"]]
    assert "page_size" in names
    assert "description" not in served["paths"]["/v1/rooms"]["get"]  # modules carry no comments


async def test_documents_answer_304_to_their_etag(gateway: Gateway) -> None:
    for path in ("/openapi.json", "/asyncapi.json"):
        async with gateway.session.get(gateway.url(path)) as first:
            etag = first.headers["ETag"]
        headers = {"If-None-Match": etag}
        async with gateway.session.get(gateway.url(path), headers=headers) as again:
            assert again.status == 304, path


@pytest.mark.timeout(NPM_LIMIT + 60)
async def test_asyncapi_json_is_served_and_valid_for_the_asyncapi_parser(
    gateway: Gateway, tmp_path: Path
) -> None:
    served = await fetch_json(gateway, "/asyncapi.json")
    assert served["asyncapi"] == "3.0.0"
    assert "ChatService_Subscribe.sse" in served["channels"]
    assert {server["host"] for server in served["servers"].values()} == {"{host}"}
    assert served["servers"]["ws"]["variables"]["host"]["default"] == "127.0.0.1:8080"
    await ensure_node_modules()
    path = tmp_path / "served.asyncapi.json"
    path.write_text(json.dumps(served), encoding="utf-8")
    output = await run_in_sdk(tool("node"), "scripts/validate-asyncapi.mjs", str(path), limit=60)
    assert "valid:" in output, output
    assert '"severity":"error"' not in output, output


# --- the reference page --------------------------------------------------------------------


async def test_the_docs_page_references_only_its_own_files(gateway: Gateway) -> None:
    async with gateway.session.get(gateway.url("/docs")) as page:
        assert page.status == 200
        assert page.content_type == "text/html"
        html = await page.text()
        policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "connect-src 'self';" in policy
    assert "unsafe" not in policy
    references = set(re.findall(r'(?:src|href)="([^"]*)"', html))
    assert references == DOCS_FILES | {"data:,", "/openapi.json", "/asyncapi.json"}
    assert re.findall(r"<script[^>]*>([^<]+)</script>", html) == []  # no inline script
    for path in sorted(DOCS_FILES):
        async with gateway.session.get(gateway.url(path)) as asset:
            assert asset.status == 200, path
            assert asset.headers["ETag"]
    init = (await _text(gateway, "/docs/init.js")).split("\n")
    code = [line for line in init if not line.lstrip().startswith(("//", "/*"))]
    assert not _REMOTE.search("\n".join(code))
    assert '"/openapi.json"' in "\n".join(code)
    css = await _text(gateway, "/docs/swagger-ui.css")
    assert "@import" not in css
    assert {url.strip("\"'")[:5] for url in re.findall(r"url\(([^)]*)\)", css)} == {"data:"}


async def _text(gateway: Gateway, path: str) -> str:
    async with gateway.session.get(gateway.url(path)) as response:
        assert response.status == 200, path
        return await response.text()


async def test_docs_with_a_slash_redirects_and_unknown_files_are_the_apis_404(
    gateway: Gateway,
) -> None:
    async with gateway.session.get(gateway.url("/docs/"), allow_redirects=False) as slash:
        assert slash.status == 308
        assert slash.headers["Location"] == "/docs"
    for path in ("/docs/swagger-ui.css.map", "/docs/LICENSE", "/docs/index.html"):
        async with gateway.session.get(gateway.url(path)) as missing:
            assert missing.status == 404, path
            assert (await missing.json())["code"] == 5


async def test_an_api_route_on_a_docs_path_fails_start_up(gateway: Gateway) -> None:
    live = gateway.runner.app[ROUTES]
    route = next(route for method, _, route in live.routes() if method == "GET")
    table: RouteTable[Route] = RouteTable()
    table.add(
        "GET", PathTemplate.parse("/docs"), replace(route, template=PathTemplate.parse("/docs"))
    )
    app = web.Application()
    app[ROUTES] = table
    app[SETTINGS] = Settings()
    add_api_docs_routes(app)
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match=r"GET /docs is served by the API docs, but "):
        await runner.setup()
    await runner.cleanup()


# --- Swagger UI in Chromium ----------------------------------------------------------------


@pytest.fixture
def browser() -> None:
    """Fails at once without the Debian package chromium or node."""
    require_chromium()


def _size(path: str) -> int:
    return Path(path).stat().st_size


async def _drive(gateway: Gateway, token: str, home: Path) -> dict[str, Any]:
    env = {
        "PATH": str(Path(tool("node")).parent),
        "HOME": str(home),
        "SWITCHBOARD_URL": gateway.base,
        "TOKEN": token,
        "ARTIFACTS": str(ARTIFACTS),
        "CHROMIUM": CHROMIUM,
    }
    code, out, err = await run_node(BROWSER, tool("node"), "docs.mjs", env=env, limit=BROWSER_LIMIT)
    assert code == 0, f"the browser driver failed ({code}):\n{err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], f"{result.get('failure')}\n{json.dumps(result, indent=1)}\n{err}"
    return result


async def test_swagger_ui_renders_offline_and_tries_an_operation_in_chromium(
    gateway: Gateway, browser: None, tmp_path: Path
) -> None:
    await ensure_node_modules(BROWSER)
    token = mint_dev_token("alice", ("member",))
    auth = {"Authorization": f"Bearer {token}"}
    async with gateway.session.post(
        gateway.url("/v1/rooms?roomId=docs-demo"), json={}, headers=auth
    ) as made:
        assert made.status == 201, await made.text()

    result = await _drive(gateway, token, home=tmp_path)

    assert result["blocked"] == []  # nothing asked for another origin
    assert result["csp"] == []
    assert result["pageErrors"] == []
    assert result["consoleErrors"] == []
    pages = {path.partition("?")[0] for path in result["requests"]}
    assert pages == {"/docs", "/openapi.json", "/v1/rooms"} | DOCS_FILES
    assert result["title"].startswith("Switchboard API")
    assert result["tags"] == ["ChatService", "PresenceService", "RoomService"]
    assert len(result["operations"]) == len(gateway.runner.app[ROUTES])
    assert "Lists rooms in name order, a page at a time." in result["summaries"]
    assert result["tryItOutStatus"] == "200"
    assert "rooms/docs-demo" in result["tryItOutBody"]
    assert f"{gateway.base}/v1/rooms" in result["tryItOutCurl"]
    assert "Authorization: Bearer" in result["tryItOutCurl"]
    assert all(_size(path) > 10_000 for path in result["screenshots"]), result["steps"]
