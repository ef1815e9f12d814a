"""Converse (bidi): posts with acks, typing, room checks, half-close."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.rpc import error_details_pb2

from services.testing import ServerHandle
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.services.conftest import as_user, ended_with, make_room, read, within


class Client:
    """A Converse call whose requests are fed through a queue (None half-closes)."""

    def __init__(self, server: ServerHandle, user: str) -> None:
        self.queue: asyncio.Queue[chat_pb2.ConverseRequest | None] = asyncio.Queue()
        self.call: Any = server.chat.Converse(self._requests(), metadata=as_user(user))

    async def _requests(self) -> Any:
        while (request := await self.queue.get()) is not None:
            yield request

    def send(self, **fields: Any) -> None:
        self.queue.put_nowait(chat_pb2.ConverseRequest(**fields))

    def post(self, text: str, request_id: str) -> None:
        post = chat_pb2.ConversePost(message=chat_pb2.Message(text=text), request_id=request_id)
        self.send(post=post)

    async def next(self, kind: str) -> Any:
        """The next response that is an ack, or an event of the given kind."""
        while True:
            response = await read(self.call)
            if kind == "ack" and response.HasField("ack"):
                return response.ack
            if response.HasField("event") and response.event.WhichOneof("kind") == kind:
                return response.event


async def test_post_gets_an_ack_and_comes_back_as_an_event(server: ServerHandle) -> None:
    await make_room(server)
    client = Client(server, "ada")
    client.send(room="rooms/lobby")
    head = await client.next("subscribed")
    assert head.subscribed.recovered is False
    client.post("hello", "r1")
    ack = await client.next("ack")
    assert ack.request_id == "r1"
    assert (ack.message.text, ack.message.sender, ack.message.offset) == ("hello", "ada", 1)
    event = await client.next("message_posted")
    assert event.message_posted == ack.message
    client.call.cancel()


async def test_a_failed_post_is_acked_with_an_error_and_the_stream_goes_on(
    server: ServerHandle,
) -> None:
    await make_room(server)
    client = Client(server, "ada")
    client.send(room="rooms/lobby", post=chat_pb2.ConversePost(request_id="bad"))
    ack = await client.next("ack")
    assert ack.request_id == "bad"
    assert not ack.HasField("message")
    assert ack.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    assert ack.error.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "post.message.text"
    client.post("fine", "good")
    assert (await client.next("ack")).message.text == "fine"
    client.call.cancel()


async def test_repeated_request_id_in_a_conversation_acks_the_original(
    server: ServerHandle,
) -> None:
    await make_room(server)
    client = Client(server, "ada")
    client.send(room="rooms/lobby")
    client.post("once", "same")
    client.post("again", "same")
    first, second = await client.next("ack"), await client.next("ack")
    assert first.message == second.message
    client.call.cancel()


async def test_typing_reaches_other_members(server: ServerHandle) -> None:
    await make_room(server)
    watcher = server.chat.Subscribe(
        chat_pb2.SubscribeRequest(room="rooms/lobby"), metadata=as_user("bob")
    )
    await read(watcher)
    client = Client(server, "ada")
    client.send(room="rooms/lobby", typing=chat_pb2.TypingSignal(active=True))
    while (event := await read(watcher)).WhichOneof("kind") != "typing":
        pass
    assert (event.typing.user, event.typing.active, event.offset) == ("ada", True, 0)
    client.send(typing=chat_pb2.TypingSignal(active=False))
    while (event := await read(watcher)).WhichOneof("kind") != "typing":
        pass
    assert event.typing.active is False
    client.call.cancel()
    watcher.cancel()


async def test_another_room_later_is_invalid_argument(server: ServerHandle) -> None:
    await make_room(server)
    await make_room(server, "other")
    client = Client(server, "ada")
    client.send(room="rooms/lobby")
    await client.next("subscribed")
    client.send(room="rooms/other", typing=chat_pb2.TypingSignal(active=True))
    error = await ended_with(client.call, grpc.StatusCode.INVALID_ARGUMENT)
    assert "rooms/other" in error.details()


async def test_first_request_must_name_a_room(server: ServerHandle) -> None:
    client = Client(server, "ada")
    client.send(typing=chat_pb2.TypingSignal(active=True))
    error = await ended_with(client.call, grpc.StatusCode.INVALID_ARGUMENT)
    assert "room" in error.details()
    empty = Client(server, "ada")
    empty.queue.put_nowait(None)
    await ended_with(empty.call, grpc.StatusCode.INVALID_ARGUMENT)


async def test_events_keep_flowing_after_the_client_half_closes(server: ServerHandle) -> None:
    await make_room(server)
    client = Client(server, "ada")
    client.send(room="rooms/lobby")
    await client.next("subscribed")
    client.queue.put_nowait(None)  # half-close
    request = chat_pb2.PostMessageRequest(
        parent="rooms/lobby", message=chat_pb2.Message(text="after half-close")
    )
    posted = await within(server.chat.PostMessage(request))
    event = await client.next("message_posted")
    assert event.message_posted == posted
    await within(server.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name="rooms/lobby")))
    await ended_with(client.call, grpc.StatusCode.NOT_FOUND)


async def test_converse_resumes_from_a_cursor(server: ServerHandle) -> None:
    await make_room(server)
    client = Client(server, "ada")
    client.send(room="rooms/lobby")
    head = await client.next("subscribed")
    client.call.cancel()
    request = chat_pb2.PostMessageRequest(parent="rooms/lobby", message=chat_pb2.Message(text="x"))
    missed = await within(server.chat.PostMessage(request))
    again = Client(server, "ada")
    again.send(room="rooms/lobby", cursor=head.id)
    assert (await again.next("subscribed")).subscribed.recovered is True
    assert (await again.next("message_posted")).message_posted == missed
    again.call.cancel()
