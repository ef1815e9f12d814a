"""The real Switchboard servicers behind the real AuthInterceptor, as ``serve`` runs them.

Direct gRPC callers — generated Python stubs and the real grpcurl binary — meet the same rules
as HTTP clients of the gateway: real signed tokens, the shipped policy, identity from the token
only, author-or-moderator edits, streams cut off when their token expires.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.authconfig import AuthConfig
from services.testing import ServerHandle, running_server
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.gateway.signing import bad_tokens, deployment_config, token
from tests.services.conftest import ended_with, fails, read, within
from tests.services.test_grpcurl import grpcurl, json_documents

BAD_TOKEN_CASES = list(bad_tokens())  # signed again in each test: nbf/exp are relative to now
Metadata = tuple[tuple[str, str], ...]


def bearer(value: str, *extra: tuple[str, str]) -> Metadata:
    return (("authorization", f"Bearer {value}"), *extra)


def as_role(user: str, role: str) -> Metadata:
    return bearer(token(user, (role,)))


@pytest.fixture
def config(tmp_path: Path) -> AuthConfig:
    return deployment_config(tmp_path)


@pytest.fixture
async def secured(config: AuthConfig) -> AsyncIterator[ServerHandle]:
    async with running_server(auth=config) as handle:
        yield handle


async def lobby(handle: ServerHandle) -> rooms_pb2.Room:
    request = rooms_pb2.CreateRoomRequest(room_id="lobby")
    return await within(handle.rooms.CreateRoom(request, metadata=as_role("alice", "member")))


async def post(handle: ServerHandle, text: str, metadata: Metadata) -> chat_pb2.Message:
    request = chat_pb2.PostMessageRequest(parent="rooms/lobby", message=chat_pb2.Message(text=text))
    return await within(handle.chat.PostMessage(request, metadata=metadata))


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_bad_tokens_are_unauthenticated_and_never_echoed(
    secured: ServerHandle, case: str
) -> None:
    bad, says = bad_tokens()[case]
    request = rooms_pb2.ListRoomsRequest()
    error = await fails(
        secured.rooms.ListRooms(request, metadata=bearer(bad)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert says in (error.details() or "")
    assert bad not in (error.details() or "")


async def test_no_token_is_unauthenticated_but_health_is_public(secured: ServerHandle) -> None:
    error = await fails(
        secured.rooms.ListRooms(rooms_pb2.ListRoomsRequest()), grpc.StatusCode.UNAUTHENTICATED
    )
    assert error.details() == "a bearer token is required"
    health = health_pb2_grpc.HealthStub(secured.channel())
    reply = await within(health.Check(health_pb2.HealthCheckRequest()))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_sender_is_the_token_subject_never_a_spoofed_header(
    secured: ServerHandle,
) -> None:
    room = await lobby(secured)
    assert room.creator == "alice"
    spoofed = bearer(
        token("alice"), ("x-user-id", "mallory"), ("x-roles", "admin"), ("x-permissions", "*")
    )
    message = await post(secured, "hi", spoofed)
    assert message.sender == "alice"
    delete = rooms_pb2.DeleteRoomRequest(name="rooms/lobby")
    await fails(
        secured.rooms.DeleteRoom(delete, metadata=spoofed), grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_viewer_reads_but_cannot_post(secured: ServerHandle) -> None:
    await lobby(secured)
    viewer = as_role("victor", "viewer")
    error = await fails(post(secured, "hello", viewer), grpc.StatusCode.PERMISSION_DENIED)
    assert error.details() == "permission 'messages.post' required"
    listed = await within(
        secured.chat.ListMessages(
            chat_pb2.ListMessagesRequest(parent="rooms/lobby"), metadata=viewer
        )
    )
    assert list(listed.messages) == []


async def test_a_member_cannot_delete_a_room_an_admin_can(secured: ServerHandle) -> None:
    await lobby(secured)
    delete = rooms_pb2.DeleteRoomRequest(name="rooms/lobby")
    error = await fails(
        secured.rooms.DeleteRoom(delete, metadata=as_role("alice", "member")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert error.details() == "permission 'rooms.delete' required"
    await within(secured.rooms.DeleteRoom(delete, metadata=as_role("root", "admin")))
    get = rooms_pb2.GetRoomRequest(name="rooms/lobby")
    await fails(
        secured.rooms.GetRoom(get, metadata=as_role("alice", "member")), grpc.StatusCode.NOT_FOUND
    )


async def test_only_the_author_or_a_moderator_edits_and_deletes(secured: ServerHandle) -> None:
    await lobby(secured)
    message = await post(secured, "original", as_role("alice", "member"))

    def edit(text: str) -> chat_pb2.UpdateMessageRequest:
        return chat_pb2.UpdateMessageRequest(message=chat_pb2.Message(name=message.name, text=text))

    bob = as_role("bob", "member")
    await fails(
        secured.chat.UpdateMessage(edit("bob was here"), metadata=bob),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    delete = chat_pb2.DeleteMessageRequest(name=message.name)
    await fails(secured.chat.DeleteMessage(delete, metadata=bob), grpc.StatusCode.PERMISSION_DENIED)
    mine = await within(
        secured.chat.UpdateMessage(edit("edited"), metadata=as_role("alice", "member"))
    )
    assert mine.text == "edited"
    moderated = await within(
        secured.chat.UpdateMessage(edit("moderated"), metadata=as_role("root", "admin"))
    )
    assert moderated.text == "moderated"
    assert moderated.sender == "alice"
    await within(secured.chat.DeleteMessage(delete, metadata=as_role("root", "admin")))


async def test_subscribe_ends_unauthenticated_when_its_token_expires(secured: ServerHandle) -> None:
    await lobby(secured)
    short = token("alice", ("member",), ttl=2)
    started = time.monotonic()
    stream = secured.chat.Subscribe(
        chat_pb2.SubscribeRequest(room="rooms/lobby"), metadata=bearer(short)
    )
    first = await read(stream)
    assert first.WhichOneof("kind") == "subscribed"
    error = await ended_with(stream, grpc.StatusCode.UNAUTHENTICATED)
    assert error.details() == "token expired"
    assert time.monotonic() - started < 4


async def test_a_new_jwks_key_is_picked_up_without_restart(tmp_path: Path) -> None:
    from tests.gateway.signing import rsa_key

    first, second = rsa_key("2026-a"), rsa_key("2026-b", seed="b")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [first.jwk()]}))
    config = deployment_config(tmp_path, keys=(), jwks_file=jwks, jwks_min_refresh_seconds=0)
    async with running_server(auth=config) as handle:
        list_rooms = rooms_pb2.ListRoomsRequest()
        await within(handle.rooms.ListRooms(list_rooms, metadata=bearer(token(key=first))))
        rotated = bearer(token(key=second))
        error = await fails(
            handle.rooms.ListRooms(list_rooms, metadata=rotated), grpc.StatusCode.UNAUTHENTICATED
        )
        assert "unknown key id '2026-b'" in (error.details() or "")
        jwks.write_text(json.dumps({"keys": [second.jwk()]}))
        await within(handle.rooms.ListRooms(list_rooms, metadata=rotated))
        retired = bearer(token(key=first))
        await fails(
            handle.rooms.ListRooms(list_rooms, metadata=retired), grpc.StatusCode.UNAUTHENTICATED
        )


# --- grpcurl --------------------------------------------------------------------------------


async def test_grpcurl_with_a_bearer_header(secured: ServerHandle) -> None:
    body = json.dumps({"room_id": "lobby"})
    member = f"authorization: Bearer {token('alice', ('member',))}"
    code, out, err = await grpcurl(
        "-plaintext",
        "-H",
        member,
        "-H",
        "x-user-id: mallory",
        "-d",
        body,
        secured.address,
        "switchboard.v1.RoomService/CreateRoom",
    )
    assert code == 0, err
    (room,) = json_documents(out)
    assert room["creator"] == "alice"
    code, out, err = await grpcurl("-plaintext", secured.address, "list")
    assert code == 0, err
    assert "switchboard.v1.ChatService" in out.split()


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_grpcurl_bad_tokens_are_unauthenticated(secured: ServerHandle, case: str) -> None:
    bad, says = bad_tokens()[case]
    code, _, err = await grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {bad}",
        secured.address,
        "switchboard.v1.RoomService/ListRooms",
    )
    assert code != 0
    assert "Code: Unauthenticated" in err
    assert says in err
    assert bad not in err


async def test_grpcurl_viewer_cannot_post_and_no_token_is_refused(secured: ServerHandle) -> None:
    await lobby(secured)
    body = json.dumps({"parent": "rooms/lobby", "message": {"text": "hi"}})
    viewer = f"authorization: Bearer {token('victor', ('viewer',))}"
    code, _, err = await grpcurl(
        "-plaintext",
        "-H",
        viewer,
        "-d",
        body,
        secured.address,
        "switchboard.v1.ChatService/PostMessage",
    )
    assert code != 0
    assert "Code: PermissionDenied" in err
    assert "permission 'messages.post' required" in err
    code, _, err = await grpcurl(
        "-plaintext", "-d", body, secured.address, "switchboard.v1.ChatService/PostMessage"
    )
    assert "Code: Unauthenticated" in err
