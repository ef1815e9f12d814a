"""Auth through the real gateway in front of the real Switchboard service, auth on in both.

Both processes run with the same ``AuthConfig`` (an RSA key file and an HS256 secret, an issuer
and an audience) and the shipped policy; every token is really signed. The gateway answers
401/400/403 itself (google.rpc.Status bodies, RFC 6750 ``WWW-Authenticate``), strips identity
headers a client sent and passes the verified identity upstream, where the service checks the
token again. An echo backend shows exactly the metadata a backend receives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import descriptor_pb2
from multidict import CIMultiDict

from gateway.authconfig import AuthConfig
from gateway.config import Settings
from services.testing import running_server
from switchboard.gateway.v1 import options_pb2
from tests.gateway.conftest import GatewayFactory, echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import DESCRIPTOR_SET
from tests.gateway.signing import bad_tokens, deployment_config, rsa_key, token
from tests.gateway.sse_client import ServerSentEvent, SseParser
from tests.gateway.stream_gateway import Gateway, running_gateway

BAD_TOKEN_CASES = list(bad_tokens())  # signed again in each test: nbf/exp are relative to now
SSE = {"Accept": "text/event-stream"}


def bearer(value: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}", **headers}


def as_role(user: str, role: str, **headers: str) -> dict[str, str]:
    return bearer(token(user, (role,)), **headers)


@asynccontextmanager
async def switchboard(config: AuthConfig) -> AsyncIterator[Gateway]:
    """The service and the gateway, both with ``config``."""
    async with running_server(auth=config) as service:
        settings = Settings(backends={"*": (service.address,)}, auth=config)
        async with running_gateway(settings) as gateway:
            yield gateway


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with switchboard(deployment_config(tmp_path)) as running:
        yield running


async def call(
    gateway: Gateway, method: str, path: str, headers: Any = None, body: Any = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    data = None if body is None else json.dumps(body)
    async with gateway.session.request(
        method, gateway.url(path), headers=headers, data=data
    ) as response:
        return response.status, await response.json(), response


async def make_lobby(gateway: Gateway) -> None:
    status, _, _ = await call(
        gateway, "POST", "/v1/rooms?roomId=lobby", as_role("alice", "member"), {}
    )
    assert status == 201


async def post(gateway: Gateway, headers: dict[str, str], text: str = "hi") -> tuple[int, Any]:
    status, body, _ = await call(
        gateway, "POST", "/v1/rooms/lobby/messages", headers, {"text": text}
    )
    return status, body


# --- 401 / 400 / 403 ------------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_bad_tokens_get_401_invalid_token(gateway: Gateway, case: str) -> None:
    bad, says = bad_tokens()[case]
    status, body, response = await call(gateway, "GET", "/v1/rooms", bearer(bad))
    assert status == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert says in challenge
    assert body == {"code": 16, "message": body["message"], "details": []}
    assert says in body["message"]
    assert bad not in json.dumps(body)
    assert all(bad not in value for value in response.headers.values())


async def test_no_token_is_401_with_a_bare_challenge_but_health_is_public(
    gateway: Gateway,
) -> None:
    status, body, response = await call(gateway, "GET", "/v1/rooms")
    assert status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert body["message"] == "a bearer token is required"
    for path in ("/healthz", "/readyz"):
        async with gateway.session.get(gateway.url(path)) as health:
            assert health.status == 200, await health.text()


async def test_a_browser_app_can_read_the_challenge(tmp_path: Path) -> None:
    config = deployment_config(tmp_path)
    async with running_server(auth=config) as service:
        settings = Settings(
            backends={"*": (service.address,)}, auth=config, cors_origins=("https://app.test",)
        )
        async with running_gateway(settings) as gateway:
            headers = {"Origin": "https://app.test", **bearer(token(ttl=-120))}
            status, _, response = await call(gateway, "GET", "/v1/rooms", headers)
    assert status == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.test"
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]


async def test_malformed_credentials_are_400_invalid_request(gateway: Gateway) -> None:
    good = f"Bearer {token()}"
    twice = CIMultiDict([("Authorization", good), ("Authorization", good)])
    status, body, response = await call(gateway, "GET", "/v1/rooms", twice)
    assert status == 400
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_request"')
    assert body["message"] == "more than one Authorization header"
    status, body, _ = await call(gateway, "GET", "/v1/rooms", {"Authorization": "Bearer "})
    assert (status, body["message"]) == (400, "the Authorization header has no token")
    status, body, response = await call(gateway, "GET", "/v1/rooms", {"Authorization": "Basic x"})
    assert (status, response.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert body["message"] == "the Authorization scheme must be Bearer"


async def test_a_cookie_never_authorizes_a_rest_call(gateway: Gateway) -> None:
    cookie = {"Cookie": f"switchboard_token={token()}"}
    status, _, _ = await call(gateway, "GET", "/v1/rooms", cookie)
    assert status == 401


async def test_a_viewer_reads_but_cannot_post(gateway: Gateway) -> None:
    await make_lobby(gateway)
    status, body = await post(gateway, as_role("victor", "viewer"))
    assert status == 403
    assert body == {"code": 7, "message": "permission 'messages.post' required", "details": []}
    status, listed, _ = await call(
        gateway, "GET", "/v1/rooms/lobby/messages", as_role("victor", "viewer")
    )
    assert status == 200
    assert listed.get("messages", []) == []


async def test_a_member_cannot_delete_a_room_an_admin_can(gateway: Gateway) -> None:
    await make_lobby(gateway)
    status, body, response = await call(
        gateway, "DELETE", "/v1/rooms/lobby", as_role("alice", "member")
    )
    assert status == 403
    assert body["message"] == "permission 'rooms.delete' required"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
    status, _, _ = await call(gateway, "DELETE", "/v1/rooms/lobby", as_role("root", "admin"))
    assert status == 200
    status, _, _ = await call(gateway, "GET", "/v1/rooms/lobby", as_role("alice", "member"))
    assert status == 404


# --- identity -------------------------------------------------------------------------------


async def test_spoofed_identity_headers_are_ignored(gateway: Gateway) -> None:
    await make_lobby(gateway)
    spoofed = as_role(
        "alice",
        "member",
        **{
            "X-User-Id": "mallory",
            "Grpc-Metadata-X-User-Id": "mallory",
            "Grpc-Metadata-X-Roles": "admin",
            "Grpc-Metadata-X-Permissions": "messages.moderate",
        },
    )
    status, message = await post(gateway, spoofed)
    assert status == 201
    assert message["sender"] == "alice"
    bob = as_role("bob", "member", **{"Grpc-Metadata-X-Permissions": "messages.moderate"})
    path = f"/v1/{message['name']}"
    status, _, _ = await call(gateway, "PATCH", path, bob, {"text": "bob was here"})
    assert status == 403


async def test_only_the_author_or_a_moderator_edits(gateway: Gateway) -> None:
    await make_lobby(gateway)
    _, message = await post(gateway, as_role("alice", "member"), "original")
    path = f"/v1/{message['name']}"
    status, body, _ = await call(gateway, "PATCH", path, as_role("bob", "member"), {"text": "x"})
    assert status == 403
    assert body["message"].startswith("only the sender (alice) or an administrator may change")
    status, _, _ = await call(gateway, "DELETE", path, as_role("bob", "member"))
    assert status == 403
    status, edited, _ = await call(
        gateway, "PATCH", path, as_role("alice", "member"), {"text": "edited"}
    )
    assert (status, edited["text"]) == (200, "edited")
    status, moderated, _ = await call(
        gateway, "PATCH", path, as_role("root", "admin"), {"text": "moderated"}
    )
    assert (status, moderated["text"], moderated["sender"]) == (200, "moderated", "alice")


# --- JWKS rotation --------------------------------------------------------------------------


async def test_jwks_rotation_is_picked_up_without_restart(tmp_path: Path) -> None:
    old, new = rsa_key("2026-a"), rsa_key("2026-b", seed="b")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [old.jwk()]}))
    config = deployment_config(tmp_path, keys=(), jwks_file=jwks, jwks_min_refresh_seconds=0)
    async with switchboard(config) as gateway:
        status, _, _ = await call(gateway, "GET", "/v1/rooms", bearer(token(key=old)))
        assert status == 200
        status, body, _ = await call(gateway, "GET", "/v1/rooms", bearer(token(key=new)))
        assert status == 401
        assert body["message"] == "unknown key id '2026-b'"
        jwks.write_text(json.dumps({"keys": [old.jwk(), new.jwk()]}))
        status, _, _ = await call(gateway, "GET", "/v1/rooms", bearer(token(key=new)))
        assert status == 200
        jwks.write_text(json.dumps({"keys": [new.jwk()]}))
        status, _, _ = await call(gateway, "GET", "/v1/rooms", bearer(token(key=new)))
        assert status == 200


# --- streams: admitted at the app level, cut off by the service at expiry -----------------------


async def sse_events(response: aiohttp.ClientResponse) -> list[ServerSentEvent]:
    parser, events = SseParser(), []
    async with asyncio.timeout(8):
        async for chunk in response.content.iter_any():
            events.extend(parser.feed(chunk))
    return events


async def test_sse_with_a_cookie_ends_with_an_error_event_when_the_token_expires(
    gateway: Gateway,
) -> None:
    await make_lobby(gateway)
    path = gateway.url("/v1/rooms/lobby:subscribe")
    async with gateway.session.get(path, headers=SSE) as refused:
        assert refused.status == 401
    short = {"Cookie": f"switchboard_token={token(ttl=2)}", **SSE}
    async with gateway.session.get(path, headers=short) as response:
        assert response.status == 200
        events = await sse_events(response)
    kinds = [event.type for event in events]
    assert kinds[0] == "subscribed"
    assert kinds[-1] == "error"
    assert json.loads(events[-1].data)["code"] == 16
    assert json.loads(events[-1].data)["message"] == "token expired"


async def test_websocket_bearer_subprotocol_is_echoed_never_the_token(gateway: Gateway) -> None:
    await make_lobby(gateway)
    url = gateway.ws_url("/v1/rooms/lobby:converse")
    member = token("alice", ("member",))
    async with gateway.session.ws_connect(url, protocols=("bearer", member)) as socket:
        assert socket.protocol == "bearer"
        await socket.send_json({"message": {"room": "rooms/lobby"}})
        first = json.loads((await asyncio.wait_for(socket.receive(), 5)).data)
        assert "subscribed" in first["result"]["event"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with gateway.session.ws_connect(url, protocols=("bearer", "garbage")):
            pass
    assert refused.value.status == 401


async def test_websocket_with_a_cookie_ends_unauthenticated_at_expiry(gateway: Gateway) -> None:
    await make_lobby(gateway)
    url = gateway.ws_url("/v1/rooms/lobby:converse")
    cookie = {"Cookie": f"switchboard_token={token(ttl=2)}"}
    frames = []
    async with gateway.session.ws_connect(url, headers=cookie) as socket:
        await socket.send_json({"message": {"room": "rooms/lobby"}})
        async with asyncio.timeout(8):
            frames = [json.loads(message.data) async for message in socket]
    assert "subscribed" in frames[0]["result"]["event"]
    assert frames[-1] == {"status": {"code": 16, "message": "token expired", "details": []}}
    assert socket.close_code == 1008


# --- what a backend receives ----------------------------------------------------------------


def guarded_descriptor_set(tmp_path: Path) -> Path:
    """testing.v1 with an AuthRule on every method: GetEverything public, others messages.read."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[options_pb2.auth]
                if method.name == "GetEverything":
                    rule.public = True
                else:
                    rule.permissions.append("messages.read")
    path = tmp_path / "guarded.binpb"
    path.write_bytes(files.SerializeToString())
    return path


async def test_the_backend_gets_the_verified_identity_and_no_spoofed_keys(
    echo: EchoServer, gateway_for: GatewayFactory, tmp_path: Path
) -> None:
    config = deployment_config(tmp_path, strip_headers=("x-tenant",))
    settings = echo_settings(
        echo,
        descriptor_set=guarded_descriptor_set(tmp_path),
        header_allowlist=("x-user-id", "x-roles", "x-trace"),
        auth=config,
    )
    client = await gateway_for(settings)
    member = token("alice", ("member",))
    spoofed = {
        "Authorization": f"Bearer {member}",
        "X-User-Id": "mallory",
        "X-Roles": "admin",
        "X-Trace": "kept",
        "Grpc-Metadata-X-Permissions": "*",
        "Grpc-Metadata-X-Token-Issued-At": "1",
        "Grpc-Metadata-X-Tenant": "other",
    }
    response = await client.post("/v1/everything", json={"id": "e"}, headers=spoofed)
    assert response.status == 200, await response.text()
    received = echo.last("CreateEverything").metadata
    iat = json.loads(_payload(member))["iat"]
    assert received["authorization"] == f"Bearer {member}"
    assert received["x-user-id"] == "alice"
    assert received["x-roles"] == "member"
    assert received["x-permissions"] == "messages.post,messages.read,rooms.create,rooms.read"
    assert received["x-token-issued-at"] == str(iat)
    assert received["x-trace"] == "kept"
    assert "x-tenant" not in received
    anonymous = await client.get("/v1/everything/e", headers={"X-User-Id": "mallory"})
    assert anonymous.status == 200
    public_call = echo.last("GetEverything").metadata
    assert not {"authorization", "x-user-id", "x-roles", "x-permissions"} & set(public_call)
    refused = await client.post("/v1/everything", json={"id": "e"})
    assert refused.status == 401


async def test_with_auth_off_identity_keys_are_still_stripped(
    echo: EchoServer, gateway_for: GatewayFactory
) -> None:
    client = await gateway_for(echo_settings(echo, header_allowlist=("x-user-id",)))
    headers = {
        "Authorization": "Bearer anything",
        "X-User-Id": "mallory",
        "Grpc-Metadata-X-Roles": "admin",
    }
    response = await client.get("/v1/everything/e", headers=headers)
    assert response.status == 200
    received = echo.last("GetEverything").metadata
    assert received["authorization"] == "Bearer anything"  # the backend may still check it
    assert "x-user-id" not in received
    assert "x-roles" not in received


def _payload(jwt_text: str) -> str:
    import base64

    part = jwt_text.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
