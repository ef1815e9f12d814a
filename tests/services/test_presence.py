"""Presence: members counted once per user, join/leave events, ListMembers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from services.testing import ServerHandle
from switchboard.v1 import chat_pb2, presence_pb2
from tests.services.conftest import (
    as_user,
    eventually,
    fails,
    field_violations,
    make_room,
    read,
    within,
)


def subscribe(server: ServerHandle, user: str) -> Any:
    request = chat_pb2.SubscribeRequest(room="rooms/lobby")
    return server.chat.Subscribe(request, metadata=as_user(user))


async def members(server: ServerHandle) -> list[tuple[str, int]]:
    request = presence_pb2.ListMembersRequest(parent="rooms/lobby")
    response = await within(server.presence.ListMembers(request))
    return [(m.user, m.connections) for m in response.members]


async def presence_event(call: Any) -> tuple[str, str]:
    while True:
        event = await read(call)
        kind = event.WhichOneof("kind")
        if kind in ("member_joined", "member_left"):
            return kind, getattr(event, kind).user


async def until_members(server: ServerHandle, expected: list[tuple[str, int]]) -> None:
    """Waits until ListMembers says ``expected`` (streams close asynchronously)."""

    async def matches() -> bool:
        return await members(server) == expected

    await eventually(matches)


async def test_two_streams_of_one_user_count_once(server: ServerHandle) -> None:
    await make_room(server)
    observer = subscribe(server, "zed")
    assert await presence_event(observer) == ("member_joined", "zed")

    first = subscribe(server, "ada")
    await read(first)
    assert await presence_event(observer) == ("member_joined", "ada")
    second = subscribe(server, "ada")
    await read(second)
    assert await members(server) == [("ada", 2), ("zed", 1)]

    response = await within(
        server.presence.ListMembers(presence_pb2.ListMembersRequest(parent="rooms/lobby"))
    )
    assert response.members[0].join_time.ToNanoseconds() > 0

    second.cancel()
    await until_members(server, [("ada", 1), ("zed", 1)])
    first.cancel()
    assert await presence_event(observer) == ("member_left", "ada")
    await until_members(server, [("zed", 1)])
    observer.cancel()


async def test_converse_streams_count_as_presence(server: ServerHandle) -> None:
    await make_room(server)
    queue: asyncio.Queue[chat_pb2.ConverseRequest] = asyncio.Queue()
    queue.put_nowait(chat_pb2.ConverseRequest(room="rooms/lobby"))

    async def requests() -> Any:
        while True:
            yield await queue.get()

    call = server.chat.Converse(requests(), metadata=as_user("bea"))
    await read(call)
    await until_members(server, [("bea", 1)])
    call.cancel()
    await until_members(server, [])


async def test_list_members_validation_and_missing_room(server: ServerHandle) -> None:
    error = await fails(
        server.presence.ListMembers(presence_pb2.ListMembersRequest(parent="lobby")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "parent"
    await fails(
        server.presence.ListMembers(presence_pb2.ListMembersRequest(parent="rooms/lobby")),
        grpc.StatusCode.NOT_FOUND,
    )
