"""The chat page (gateway/webpage.py, gateway/web/): its HTTP side, then the page itself in a
real headless Chromium against the real service and gateway, auth on in both.

The browser test runs tests/gateway/browser/webpage.mjs (playwright-core driving
/usr/bin/chromium; ``npm ci`` there once when node_modules is missing) with two users minted
with the development secret, and asserts on the JSON it prints. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.authconfig import AuthConfig
from gateway.bridges.streaming import StreamSettings
from gateway.config import Settings
from gateway.webpage import add_web_routes
from services.auth import mint_dev_token
from services.testing import running_server
from tests.gateway.node_tools import (
    BROWSER,
    CHROMIUM,
    ensure_node_modules,
    require_chromium,
    run_node,
    tool,
)
from tests.gateway.stream_gateway import Gateway, running_gateway

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_LIMIT = 45.0


@pytest.fixture
def dev_auth(monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    """`--dev-auth` as `make run` uses it, with a secret of this test's own."""
    monkeypatch.setenv("SWITCHBOARD_DEV_SECRET", secrets.token_urlsafe(48))
    return AuthConfig(dev=True)


@asynccontextmanager
async def switchboard(auth: AuthConfig | None) -> AsyncIterator[Gateway]:
    """The real service and the real gateway (page routes included) on 127.0.0.1:0."""
    async with running_server(auth=auth) as service:
        settings = Settings(backends={"*": (service.address,)}, auth=auth)
        async with running_gateway(settings, StreamSettings(retry_ms=1000)) as gateway:
            yield gateway


@pytest.fixture
async def gateway(dev_auth: AuthConfig) -> AsyncIterator[Gateway]:
    async with switchboard(dev_auth) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the page and its assets ---------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(gateway: Gateway) -> None:
    async with gateway.session.get(gateway.url("/")) as page:
        assert page.status == 200, await page.text()
        assert page.content_type == "text/html"
        assert '<script type="module" src="/web/app.js">' in await page.text()
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "connect-src 'self'" in policy
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        etag = page.headers["ETag"]
    async with gateway.session.get(gateway.url("/"), headers={"If-None-Match": etag}) as again:
        assert again.status == 304
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        async with gateway.session.get(gateway.url(f"/web/{name}")) as asset:
            assert (asset.status, asset.content_type) == (200, kind)


async def test_only_the_page_files_are_served(gateway: Gateway) -> None:
    for path in ("/web/missing.js", "/web/..%2Fwebpage.py", "/web/%2E%2E%2Fapp.py"):
        async with gateway.session.get(gateway.url(path)) as response:
            assert response.status == 404, path
            body = await response.json()
            assert body["code"] == 5, body
            assert "no" in body["message"], body


async def test_the_api_still_answers_next_to_the_page(gateway: Gateway) -> None:
    async with gateway.session.get(gateway.url("/v1/rooms")) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def _api(request: web.Request) -> web.Response:
    return web.Response()


def test_web_routes_added_after_the_catch_all_are_refused() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _api)
    with pytest.raises(RuntimeError, match="before the API's catch-all"):
        add_web_routes(app)


# --- the session cookie ----------------------------------------------------------------------


async def test_sign_in_sets_an_http_only_strict_cookie_until_the_token_expires(
    gateway: Gateway,
) -> None:
    token = mint_dev_token("alice", ("member",), ttl=600)
    async with gateway.session.post(gateway.url("/auth/session"), headers=bearer(token)) as ok:
        assert ok.status == 200, await ok.text()
        body = await ok.json()
        cookie = SimpleCookie(ok.headers["Set-Cookie"])["switchboard_token"]
    assert body["user"] == "alice"
    assert body["roles"] == ["member"]
    assert body["authentication"] == "on"
    assert body["expireTime"].endswith("Z")
    assert cookie.value == token
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert 590 <= int(cookie["max-age"]) <= 600
    assert token not in json.dumps(body)


async def test_the_sign_in_cookie_opens_a_live_feed_but_never_authorises_rest(
    gateway: Gateway,
) -> None:
    token = mint_dev_token("alice", ("member",))
    lobby = gateway.url("/v1/rooms?roomId=lobby")
    async with gateway.session.post(lobby, json={}, headers=bearer(token)) as made:
        assert made.status == 201, await made.text()
    async with gateway.session.post(gateway.url("/auth/session"), headers=bearer(token)) as ok:
        cookies = {
            "switchboard_token": SimpleCookie(ok.headers["Set-Cookie"])["switchboard_token"].value
        }
    async with gateway.session.get(gateway.url("/v1/rooms"), cookies=cookies) as rest:
        assert rest.status == 401
    sse = {"Accept": "text/event-stream"}
    async with gateway.session.get(
        gateway.url("/v1/rooms/lobby:subscribe"), headers=sse, cookies=cookies
    ) as feed:
        assert feed.status == 200, await feed.text()
        lines: list[bytes] = []
        while b"event: subscribed\n" not in lines:
            lines.append(await feed.content.readline())


async def test_a_bad_token_is_401_with_a_status_and_a_challenge(gateway: Gateway) -> None:
    expired = mint_dev_token("alice", ("member",), now=time.time() - 7200, ttl=60)
    forged = mint_dev_token("alice", ("member",), secret=secrets.token_urlsafe(48))
    for token, says in [(expired, "expired"), (forged, "signature")]:
        async with gateway.session.post(
            gateway.url("/auth/session"), headers=bearer(token)
        ) as refused:
            assert refused.status == 401
            assert refused.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
            assert "Set-Cookie" not in refused.headers
            body = await refused.json()
            assert body["code"] == 16, body
            assert says in body["message"], body
            assert token not in await refused.text()
    async with gateway.session.post(gateway.url("/auth/session")) as anonymous:
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"


async def test_sign_out_clears_the_cookie(gateway: Gateway) -> None:
    async with gateway.session.delete(gateway.url("/auth/session")) as cleared:
        assert cleared.status == 204
        cookie = SimpleCookie(cleared.headers["Set-Cookie"])["switchboard_token"]
    assert cookie.value == ""
    assert cookie["max-age"] == "0"
    assert cookie["path"] == "/"


async def test_with_auth_off_sign_in_says_so_and_sets_no_cookie() -> None:
    async with (
        switchboard(None) as gateway,
        gateway.session.post(gateway.url("/auth/session")) as response,
    ):
        assert response.status == 200
        assert await response.json() == {"authentication": "off"}
        assert "Set-Cookie" not in response.headers


# --- the page in Chromium ------------------------------------------------------------------


ARCHIVE_SIZE = 60  # more than the page's first history page (50)


async def _fill_archive(gateway: Gateway, token: str) -> None:
    """The room ``archive`` with ARCHIVE_SIZE messages, posted through the gateway's REST API."""
    requests: list[tuple[str, dict[str, str]]] = [("/v1/rooms?roomId=archive", {})] + [
        ("/v1/rooms/archive/messages", {"text": f"old {number}"})
        for number in range(1, ARCHIVE_SIZE + 1)
    ]
    for path, body in requests:
        async with gateway.session.post(
            gateway.url(path), json=body, headers=bearer(token)
        ) as made:
            assert made.status == 201, await made.text()


async def _drive(gateway: Gateway, tokens: dict[str, str], home: Path) -> dict[str, Any]:
    env = {
        "PATH": str(Path(tool("node")).parent),
        "HOME": str(home),
        "SWITCHBOARD_URL": gateway.base,
        "TOKEN_ALICE": tokens["alice"],
        "TOKEN_BOB": tokens["bob"],
        "ARTIFACTS": str(ARTIFACTS),
        "ARCHIVE_SIZE": str(ARCHIVE_SIZE),
        "CHROMIUM": CHROMIUM,
    }
    code, out, err = await run_node(
        BROWSER, tool("node"), "webpage.mjs", env=env, limit=BROWSER_LIMIT
    )
    assert code == 0, f"the browser driver failed ({code}):\n{err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], f"{result.get('failure')}\nsteps: {result['steps']}\n{err}"
    return result


@pytest.fixture
def artifacts() -> Path:
    """Where the screenshots go; fails at once without the Debian package chromium."""
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _file_sizes(paths: list[str]) -> list[int]:
    return [Path(path).stat().st_size for path in paths]


async def test_two_users_chat_live_in_chromium_and_a_dropped_page_loses_nothing(
    gateway: Gateway, artifacts: Path, tmp_path: Path
) -> None:
    await ensure_node_modules(BROWSER)
    tokens = {user: mint_dev_token(user, ("member",)) for user in ("alice", "bob", "carol")}
    await _fill_archive(gateway, tokens["carol"])

    result = await _drive(gateway, tokens, home=tmp_path)

    assert result["pageErrors"] == []
    assert "token" not in result["aliceUrlAfterSignIn"]  # the #token= fragment is dropped
    assert result["aliceCookie"] == {"httpOnly": True, "sameSite": "Strict", "path": "/"}
    assert result["aliceCookieReadableByScript"] is False
    assert result["aliceMembers"] == ["alice (you)", "bob"]
    assert result["bobMembers"] == ["alice", "bob (you)"]
    assert result["bobMembersWhileAliceIsCut"] == ["bob (you)"]  # her streams ended
    assert result["bobMembersAfterAliceIsBack"] == ["alice", "bob (you)"]
    assert result["typingShownToAlice"] == "bob is typing…"
    assert "room_id" in result["errorShownToBob"], result["errorShownToBob"]
    everything = [
        "alice: hello from alice",
        "bob: hi alice",
        "alice: hi bob",
        "bob: missed 1",
        "bob: missed 2",
        "bob: missed 3",
        "alice: back online",
    ]
    assert result["aliceMessages"] == everything  # each once, in order, after the drop
    assert result["bobMessages"] == everything
    # the drop was bridged by a Last-Event-ID resume, not by reloading history
    assert int(result["aliceFeed"]["resumed"]) >= 1
    assert result["aliceFeed"]["reloaded"] == "0"
    assert result["aliceError"] == ""
    old = [f"carol: old {number}" for number in range(1, ARCHIVE_SIZE + 1)]
    assert result["archiveFirstPage"] == old[-50:]  # newest page first, shown oldest on top
    assert result["loadOlderShown"] is True
    assert result["archiveAll"] == old
    assert result["loadOlderShownAtTheStart"] is False
    assert "switchboard_token" not in result["bobCookiesAfterSignOut"]
    assert all(size > 10_000 for size in _file_sizes(result["screenshots"]))
