"""The auth interceptor through a real grpc.aio server: 401/403/OK, identity, stream cut-off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from gateway.auth import Authenticator, ClaimRules, Identity, KeyRing, TokenVerifier
from gateway.authconfig import AuthConfig, open_authenticator
from gateway.policy import Policy
from services.auth import AuthInterceptor, add_token_command, mint_dev_token
from switchboard.v1 import chat_pb2, chat_pb2_grpc, rooms_pb2, rooms_pb2_grpc
from tests.gateway.signing import claims, ed_key

KEY = ed_key(kid="svc")
NOBODY = Identity("nobody")
IDENTITY: ContextVar[Identity] = ContextVar("test_identity", default=NOBODY)


class Rooms(rooms_pb2_grpc.RoomServiceServicer):
    async def GetRoom(self, request: Any, context: Any) -> rooms_pb2.Room:
        return rooms_pb2.Room(name=request.name, creator=IDENTITY.get().user)

    async def CreateRoom(self, request: Any, context: Any) -> rooms_pb2.Room:
        return rooms_pb2.Room(name=f"rooms/{request.room_id}", creator=IDENTITY.get().user)


class Chat(chat_pb2_grpc.ChatServiceServicer):
    async def Subscribe(self, request: Any, context: Any) -> AsyncIterator[chat_pb2.RoomEvent]:
        offset = 0
        while True:  # an endless live stream, as a quiet room's subscription is
            offset += 1
            yield chat_pb2.RoomEvent(id=IDENTITY.get().user, offset=offset)
            await asyncio.sleep(0.05)

    async def Converse(self, request_iterator: Any, context: Any) -> None:
        async for _ in request_iterator:  # written with context.write, not as a generator
            await context.write(chat_pb2.ConverseResponse(event=chat_pb2.RoomEvent(id="ack")))


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    verifier = TokenVerifier(KeyRing([KEY.verification_key()]), ClaimRules(leeway=0))
    interceptor = AuthInterceptor(Authenticator(verifier, Policy.default()), identity_var=IDENTITY)
    server = grpc.aio.server(interceptors=[interceptor])
    rooms_pb2_grpc.add_RoomServiceServicer_to_server(Rooms(), server)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(Chat(), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    reflection.enable_server_reflection((reflection.SERVICE_NAME,), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as open_channel:
        yield open_channel
    await server.stop(None)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def drain(call: Any, into: list[Any]) -> None:
    async for item in call:
        into.append(item)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_no_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    rooms = rooms_pb2_grpc.RoomServiceStub(channel)
    code, message = await status_of(rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/a")))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert message == "a bearer token is required"


async def test_bad_tokens_are_unauthenticated_without_echoing_them(
    channel: grpc.aio.Channel,
) -> None:
    rooms = rooms_pb2_grpc.RoomServiceStub(channel)
    request = rooms_pb2.GetRoomRequest(name="rooms/a")
    for token, expected in [
        (KEY.sign(claims(ttl=-60)), "token expired"),
        (ed_key(kid="svc").sign(claims()), "signature verification failed"),
        (ed_key(kid="other").sign(claims()), "unknown key id 'other'"),
        ("garbage.garbage.garbage", "token is malformed"),
    ]:
        code, message = await status_of(rooms.GetRoom(request, metadata=bearer(token)))
        assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, expected)
        assert token not in message


async def test_missing_permission_is_permission_denied(channel: grpc.aio.Channel) -> None:
    rooms = rooms_pb2_grpc.RoomServiceStub(channel)
    viewer = KEY.sign(claims(roles=["viewer"]))
    call = rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="a"), metadata=bearer(viewer))
    code, message = await status_of(call)
    assert (code, message) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "permission 'rooms.create' required",
    )


async def test_allowed_call_sees_the_identity(channel: grpc.aio.Channel) -> None:
    rooms = rooms_pb2_grpc.RoomServiceStub(channel)
    member = KEY.sign(claims(sub="bob", roles=["member"]))
    room = await rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="a"), metadata=bearer(member))
    assert (room.name, room.creator) == ("rooms/a", "bob")


async def test_health_is_public(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_is_public_whatever_token_is_sent(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    for metadata in ((), bearer(KEY.sign(claims())), bearer(KEY.sign(claims(ttl=-600)))):
        replies = [
            reply async for reply in stub.ServerReflectionInfo(iter([request]), metadata=metadata)
        ]
        names = [s.name for s in replies[0].list_services_response.service]
        assert reflection.SERVICE_NAME in names


async def test_server_stream_ends_unauthenticated_when_the_token_expires(
    channel: grpc.aio.Channel,
) -> None:
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    token = KEY.sign(claims(sub="carol", roles=["viewer"], ttl=2))
    expires_at = time.time() + 2
    call = chat.Subscribe(chat_pb2.SubscribeRequest(room="rooms/a"), metadata=bearer(token))
    events: list[chat_pb2.RoomEvent] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(call, events)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "token expired"
    assert events
    assert all(event.id == "carol" for event in events)
    assert time.time() >= expires_at - 1.0  # ended at exp (whole seconds), not before


async def test_bidi_stream_written_with_context_write_ends_at_expiry(
    channel: grpc.aio.Channel,
) -> None:
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    token = KEY.sign(claims(roles=["member"], ttl=1))
    call = chat.Converse(metadata=bearer(token))
    await call.write(chat_pb2.ConverseRequest(room="rooms/a"))
    assert (await call.read()).event.id == "ack"
    assert await call.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await call.details() == "token expired"


async def test_dev_token_is_accepted_by_a_dev_config(tmp_path: Any) -> None:
    environ = {"SWITCHBOARD_DEV_SECRET": "d" * 40, "XDG_STATE_HOME": str(tmp_path)}
    token = mint_dev_token("alice", ["admin"], ttl=60, secret=environ["SWITCHBOARD_DEV_SECRET"])
    async with open_authenticator(AuthConfig(dev=True), environ) as authenticator:
        identity = await authenticator.authenticate(token)
    assert identity.user == "alice"
    assert identity.has_permission("messages.moderate")


async def test_token_command_prints_a_dev_token(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("SWITCHBOARD_DEV_SECRET", raising=False)
    parser = argparse.ArgumentParser()
    add_token_command(parser.add_subparsers())
    namespace = parser.parse_args(["token", "--sub", "alice", "--roles", "member,viewer"])
    assert await namespace.run(namespace) == 0
    token = capsys.readouterr().out.strip()
    assert (tmp_path / "switchboard" / "dev-secret").stat().st_mode & 0o777 == 0o600
    async with open_authenticator(AuthConfig(dev=True)) as authenticator:
        identity = await authenticator.authenticate(token)
    assert identity.roles == {"member", "viewer"}
    assert identity.expires_at is not None
    assert identity.expires_at - time.time() > 3500
