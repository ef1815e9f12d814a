"""The gateway's per-request decision, end to end over real tokens: 401/400/403 and metadata."""

from __future__ import annotations

import time

import pytest

from gateway.access import check_access
from gateway.auth import (
    Authenticator,
    InvalidRequest,
    KeyRing,
    MissingCredentials,
    PermissionDenied,
    TokenExpired,
    TokenVerifier,
)
from gateway.credentials import TokenSources, Transport
from gateway.policy import Policy
from switchboard.gateway.v1 import options_pb2
from tests.gateway.signing import claims, rsa_key

KEY = rsa_key()
AUTH = Authenticator(TokenVerifier(KeyRing([KEY.verification_key()])), Policy.default())
SOURCES = TokenSources(query_param="access_token")
READ = options_pb2.AuthRule(permissions=["messages.read"])
PUBLIC = options_pb2.AuthRule(public=True)
CLIENT_METADATA = (
    ("x-user-id", "mallory"),
    ("authorization", "Bearer junk"),
    ("x-request-id", "r"),
)


async def test_allowed_request_sends_the_verified_identity_upstream() -> None:
    token = KEY.sign(claims(sub="alice", roles=["viewer"]))
    access = await check_access(
        AUTH, READ, {"Cookie": f"switchboard_token={token}"}, Transport.SSE, SOURCES
    )
    sent = dict(access.metadata(CLIENT_METADATA))
    assert sent["authorization"] == f"Bearer {token}"
    assert sent["x-user-id"] == "alice"
    assert sent["x-permissions"] == "messages.read,rooms.read"
    assert sent["x-request-id"] == "r"
    left = access.seconds_left(time.time())
    assert left is not None
    assert 250 < left <= 300


async def test_websocket_subprotocol_token_asks_to_echo_bearer() -> None:
    token = KEY.sign(claims(roles=["viewer"]))
    headers = {"Sec-WebSocket-Protocol": f"bearer, {token}"}
    access = await check_access(AUTH, READ, headers, Transport.WEBSOCKET, SOURCES)
    assert access.subprotocol == "bearer"


async def test_rejections_carry_status_and_challenge() -> None:
    with pytest.raises(MissingCredentials) as missing:
        await check_access(AUTH, READ, {}, Transport.HTTP, SOURCES)
    assert (missing.value.http_status, missing.value.www_authenticate) == (401, "Bearer")
    with pytest.raises(InvalidRequest) as malformed:
        await check_access(AUTH, READ, {"Authorization": "Bearer"}, Transport.HTTP, SOURCES)
    assert malformed.value.http_status == 400
    expired = KEY.sign(claims(ttl=-300))
    with pytest.raises(TokenExpired) as late:
        await check_access(
            AUTH, READ, {"Authorization": f"Bearer {expired}"}, Transport.HTTP, SOURCES
        )
    assert late.value.www_authenticate.endswith('error_description="token expired"')
    member = KEY.sign(claims(roles=["member"]))
    delete = options_pb2.AuthRule(permissions=["rooms.delete"])
    with pytest.raises(PermissionDenied) as denied:
        await check_access(
            AUTH, delete, {"Authorization": f"Bearer {member}"}, Transport.HTTP, SOURCES
        )
    assert denied.value.http_status == 403


async def test_anonymous_public_call_forwards_no_identity() -> None:
    access = await check_access(AUTH, PUBLIC, {}, Transport.HTTP, SOURCES)
    assert access.identity is None
    assert access.metadata(CLIENT_METADATA) == (("x-request-id", "r"),)
    assert access.seconds_left(time.time()) is None
