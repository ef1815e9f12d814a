"""Subscribe: the first event, live delivery, and every resume case."""

from __future__ import annotations

import asyncio

import grpc

from services.config import ServiceConfig
from services.engine import Cursor
from services.testing import ServerHandle
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.services.conftest import (
    ServerFactory,
    as_user,
    ended_with,
    fails,
    field_violations,
    make_room,
    read,
    read_n,
    within,
)


async def post(server: ServerHandle, text: str) -> chat_pb2.Message:
    request = chat_pb2.PostMessageRequest(parent="rooms/lobby", message=chat_pb2.Message(text=text))
    return await within(server.chat.PostMessage(request, metadata=as_user("ada")))


def subscribe(server: ServerHandle, cursor: str = "", user: str = "reader") -> object:
    request = chat_pb2.SubscribeRequest(room="rooms/lobby", cursor=cursor)
    return server.chat.Subscribe(request, metadata=as_user(user))


async def messages(call: object, count: int) -> list[chat_pb2.RoomEvent]:
    """The next ``count`` message events, skipping presence events."""
    found: list[chat_pb2.RoomEvent] = []
    while len(found) < count:
        event = await read(call)
        if event.offset:
            found.append(event)
    return found


async def test_first_event_is_subscribed_with_the_start_cursor(server: ServerHandle) -> None:
    room = await make_room(server)
    await post(server, "before")
    call = subscribe(server)
    first = await read(call)
    assert first.WhichOneof("kind") == "subscribed"
    assert first.subscribed.recovered is False
    assert first.subscribed.offset == 1
    assert first.id == Cursor(room.epoch, 1).encode()
    assert (first.epoch, first.room) == (room.epoch, "rooms/lobby")
    joined = await read(call)
    assert joined.member_joined.user == "reader"
    live = await post(server, "live")
    (event,) = await messages(call, 1)
    assert event.message_posted == live
    assert (event.offset, event.epoch, event.id) == (2, room.epoch, Cursor(room.epoch, 2).encode())
    call.cancel()


async def test_edits_deletes_and_room_deletion_reach_subscribers(server: ServerHandle) -> None:
    await make_room(server)
    call = subscribe(server)
    await read_n(call, 2)  # subscribed, joined
    message = await post(server, "x")
    edit = chat_pb2.UpdateMessageRequest(message=chat_pb2.Message(name=message.name, text="y"))
    await within(server.chat.UpdateMessage(edit, metadata=as_user("ada")))
    delete = chat_pb2.DeleteMessageRequest(name=message.name)
    await within(server.chat.DeleteMessage(delete, metadata=as_user("ada")))
    posted, edited, deleted = await messages(call, 3)
    assert posted.message_posted.text == "x"
    assert edited.message_edited.text == "y"
    assert deleted.message_deleted.name == message.name
    await within(server.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name="rooms/lobby")))
    await ended_with(call, grpc.StatusCode.NOT_FOUND)


async def test_resume_replays_exactly_the_missed_events(server: ServerHandle) -> None:
    await make_room(server)
    first = subscribe(server)
    await read(first)
    await post(server, "seen")
    (seen,) = await messages(first, 1)
    first.cancel()
    missed = [await post(server, f"missed {i}") for i in range(3)]

    resumed = subscribe(server, cursor=seen.id)
    head = await read(resumed)
    assert head.subscribed.recovered is True
    assert head.subscribed.offset == 4
    replayed = await messages(resumed, 3)
    assert [e.message_posted for e in replayed] == missed
    live = await post(server, "live")
    (event,) = await messages(resumed, 1)
    assert event.message_posted == live
    resumed.cancel()


async def test_resume_from_the_subscribed_event_id(server: ServerHandle) -> None:
    await make_room(server)
    call = subscribe(server)
    head = await read(call)
    call.cancel()
    missed = await post(server, "while away")
    resumed = subscribe(server, cursor=head.id)
    assert (await read(resumed)).subscribed.recovered is True
    (event,) = await messages(resumed, 1)
    assert event.message_posted == missed
    resumed.cancel()


async def test_gap_beyond_history_is_not_recovered_and_nothing_replays(
    start_server: ServerFactory,
) -> None:
    async with start_server(ServiceConfig(history_max_events=3)) as server:
        await make_room(server)
        old = await post(server, "old")
        for i in range(5):
            await post(server, f"m{i}")
        call = subscribe(server, cursor=Cursor(old.epoch, old.offset).encode())
        head = await read(call)
        assert head.subscribed.recovered is False
        assert head.subscribed.offset == 6
        live = await post(server, "live")
        (event,) = await messages(call, 1)
        assert event.message_posted == live  # nothing of 2..6 was replayed
        call.cancel()


async def test_cursor_of_another_epoch_is_not_recovered(start_server: ServerFactory) -> None:
    async with start_server() as old:
        await make_room(old)
        message = await post(old, "before restart")
        cursor = Cursor(message.epoch, message.offset).encode()
    async with start_server() as restarted:
        room = await make_room(restarted)
        await post(restarted, "new epoch")
        await post(restarted, "another")
        call = subscribe(restarted, cursor=cursor)
        head = await read(call)
        assert head.subscribed.recovered is False
        assert head.epoch == room.epoch != message.epoch
        live = await post(restarted, "live")
        (event,) = await messages(call, 1)
        assert event.message_posted == live
        call.cancel()


async def test_malformed_cursor_is_invalid_argument(server: ServerHandle) -> None:
    await make_room(server)
    error = await ended_with(
        subscribe(server, cursor="not-a-cursor"), grpc.StatusCode.INVALID_ARGUMENT
    )
    ((field, description),) = field_violations(error)
    assert field == "cursor"
    assert "'not-a-cursor'" in description


async def test_cursor_ahead_of_the_stream_is_out_of_range(server: ServerHandle) -> None:
    room = await make_room(server)
    await post(server, "only one")
    future = Cursor(room.epoch, 5).encode()
    error = await ended_with(subscribe(server, cursor=future), grpc.StatusCode.OUT_OF_RANGE)
    assert field_violations(error)[0][0] == "cursor"


async def test_subscribe_to_a_missing_room_is_not_found(server: ServerHandle) -> None:
    await ended_with(subscribe(server), grpc.StatusCode.NOT_FOUND)
    await fails(
        server.chat.ListMessages(chat_pb2.ListMessagesRequest(parent="rooms/lobby")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_event_published_during_catch_up_arrives_once_in_order(
    server: ServerHandle,
) -> None:
    room = await make_room(server)
    for i in range(30):
        await post(server, f"before {i}")

    async def publish() -> None:
        for i in range(30):
            await post(server, f"during {i}")

    publisher = asyncio.create_task(publish())
    call = subscribe(server, cursor=Cursor(room.epoch, 5).encode())
    head = await read(call)
    await publisher
    assert head.subscribed.recovered is True
    events = await messages(call, 55)
    assert [e.offset for e in events] == list(range(6, 61))
    call.cancel()
