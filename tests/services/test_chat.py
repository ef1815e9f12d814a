"""ChatService unary and client-streaming RPCs: posts, idempotency, edits, history, import."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.chat import HistoryToken
from services.config import ServiceConfig
from services.engine import InvalidArgument
from services.testing import ServerHandle
from switchboard.v1 import chat_pb2
from tests.services.conftest import (
    ServerFactory,
    as_user,
    details,
    fails,
    field_violations,
    make_room,
    within,
)

MODERATOR = as_user("mod", "messages.moderate")


def post_request(text: str, room: str = "rooms/lobby", **kw: str) -> chat_pb2.PostMessageRequest:
    return chat_pb2.PostMessageRequest(parent=room, message=chat_pb2.Message(text=text), **kw)


async def post(server: ServerHandle, text: str, user: str = "ada", **kw: str) -> chat_pb2.Message:
    return await within(server.chat.PostMessage(post_request(text, **kw), metadata=as_user(user)))


async def history(server: ServerHandle, **kw: object) -> chat_pb2.ListMessagesResponse:
    request = chat_pb2.ListMessagesRequest(parent="rooms/lobby", **kw)
    return await within(server.chat.ListMessages(request))


async def test_post_message_answers_201_with_the_callers_identity(server: ServerHandle) -> None:
    room = await make_room(server)
    request = post_request("hello")
    request.message.attributes["lang"] = "en"
    call = server.chat.PostMessage(request, metadata=as_user("ada"))
    message = await within(call)
    assert ("x-http-code", "201") in tuple(await call.initial_metadata())
    assert message.sender == "ada"
    assert message.text == "hello"
    assert dict(message.attributes) == {"lang": "en"}
    assert (message.offset, message.epoch) == (1, room.epoch)
    assert message.name.startswith("rooms/lobby/messages/")
    assert message.create_time.ToNanoseconds() > 0
    assert not message.HasField("update_time")


async def test_sender_is_never_taken_from_the_request(server: ServerHandle) -> None:
    await make_room(server)
    request = chat_pb2.PostMessageRequest(
        parent="rooms/lobby", message=chat_pb2.Message(text="hi", sender="mallory")
    )
    message = await within(server.chat.PostMessage(request, metadata=as_user("ada")))
    assert message.sender == "ada"


async def test_repeated_request_id_returns_the_original_and_stores_once(
    server: ServerHandle,
) -> None:
    await make_room(server)
    first = await post(server, "once", request_id="req-1")
    again = await post(server, "different text", request_id="req-1")
    assert again == first
    other = await post(server, "twice", request_id="req-2")
    assert other.offset == 2
    page = await history(server)
    assert [m.text for m in page.messages] == ["twice", "once"]


async def test_post_validation_names_field_and_limit(start_server: ServerFactory) -> None:
    async with start_server(ServiceConfig(max_message_bytes=10)) as server:
        await make_room(server)
        cases = [
            (post_request(""), "message.text"),
            (post_request("é" * 6), "message.text"),  # 12 bytes of UTF-8 > 10
            (post_request("ok", request_id="r" * 129), "request_id"),
            (post_request("ok", room="lobby"), "parent"),
        ]
        for request, field in cases:
            error = await fails(server.chat.PostMessage(request), grpc.StatusCode.INVALID_ARGUMENT)
            assert field_violations(error)[0][0] == field
        error = await fails(
            server.chat.PostMessage(post_request("é" * 6)), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert "12 bytes" in error.details()
        assert "10" in error.details()
        too_many = post_request("ok")
        too_many.message.attributes.update({f"k{i}": "v" for i in range(17)})
        error = await fails(server.chat.PostMessage(too_many), grpc.StatusCode.INVALID_ARGUMENT)
        assert field_violations(error)[0][0] == "message.attributes"


async def test_post_to_missing_room_is_not_found(server: ServerHandle) -> None:
    error = await fails(
        server.chat.PostMessage(post_request("hi", room="rooms/nowhere")),
        grpc.StatusCode.NOT_FOUND,
    )
    assert details(error)[0].resource_name == "rooms/nowhere"


async def test_only_the_sender_or_a_moderator_edits_and_deletes(server: ServerHandle) -> None:
    await make_room(server)
    message = await post(server, "draft", user="ada")
    edit = chat_pb2.UpdateMessageRequest(message=chat_pb2.Message(name=message.name, text="final"))
    error = await fails(
        server.chat.UpdateMessage(edit, metadata=as_user("bob")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "ada" in error.details()
    edited = await within(server.chat.UpdateMessage(edit, metadata=as_user("ada")))
    assert (edited.text, edited.sender, edited.offset) == ("final", "ada", message.offset)
    assert edited.update_time.ToNanoseconds() >= edited.create_time.ToNanoseconds()

    moderated = chat_pb2.UpdateMessageRequest(
        message=chat_pb2.Message(name=message.name, text="[removed]", attributes={"m": "1"}),
        update_mask=field_mask_pb2.FieldMask(paths=["attributes"]),
    )
    by_mod = await within(server.chat.UpdateMessage(moderated, metadata=MODERATOR))
    assert (by_mod.text, dict(by_mod.attributes)) == ("final", {"m": "1"})

    delete = chat_pb2.DeleteMessageRequest(name=message.name)
    await fails(
        server.chat.DeleteMessage(delete, metadata=as_user("bob")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await within(server.chat.DeleteMessage(delete, metadata=MODERATOR))
    assert list((await history(server)).messages) == []
    error = await fails(
        server.chat.DeleteMessage(delete, metadata=MODERATOR), grpc.StatusCode.NOT_FOUND
    )
    (info,) = details(error)
    assert info.resource_type == "switchboard.v1.Message"


async def test_update_message_mask_and_name_validation(server: ServerHandle) -> None:
    await make_room(server)
    message = await post(server, "x")
    bad_path = chat_pb2.UpdateMessageRequest(
        message=chat_pb2.Message(name=message.name, text="y"),
        update_mask=field_mask_pb2.FieldMask(paths=["sender"]),
    )
    error = await fails(
        server.chat.UpdateMessage(bad_path, metadata=as_user("ada")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "update_mask.paths"
    bad_name = chat_pb2.UpdateMessageRequest(message=chat_pb2.Message(name="rooms/lobby", text="y"))
    error = await fails(server.chat.UpdateMessage(bad_name), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error)[0][0] == "message.name"


async def test_list_messages_pages_backward_by_default_and_forward(server: ServerHandle) -> None:
    await make_room(server)
    for i in range(1, 8):
        await post(server, f"m{i}")
    texts: list[str] = []
    token = ""
    while True:
        page = await history(server, page_size=3, page_token=token)
        texts += [m.text for m in page.messages]
        assert (page.first_offset, page.last_offset) == (1, 7)
        token = page.next_page_token
        if not token:
            break
    assert texts == [f"m{i}" for i in range(7, 0, -1)]

    forward = await history(server, page_size=4, direction=chat_pb2.DIRECTION_FORWARD)
    assert [m.offset for m in forward.messages] == [1, 2, 3, 4]
    rest = await history(server, page_size=4, page_token=forward.next_page_token)
    assert [m.offset for m in rest.messages] == [5, 6, 7]
    assert not rest.next_page_token

    from_offset = await history(server, start_offset=3, page_size=10)
    assert [m.offset for m in from_offset.messages] == [3, 2, 1]


async def test_list_messages_shows_latest_state_and_omits_deleted(server: ServerHandle) -> None:
    await make_room(server)
    first = await post(server, "one")
    second = await post(server, "two")
    edit = chat_pb2.UpdateMessageRequest(message=chat_pb2.Message(name=first.name, text="uno"))
    await within(server.chat.UpdateMessage(edit, metadata=as_user("ada")))
    delete = chat_pb2.DeleteMessageRequest(name=second.name)
    await within(server.chat.DeleteMessage(delete, metadata=as_user("ada")))
    page = await history(server)
    assert [(m.text, m.offset) for m in page.messages] == [("uno", 1)]
    assert page.last_offset == 4  # post, post, edit, delete


async def test_list_messages_validation(server: ServerHandle) -> None:
    await make_room(server)
    await post(server, "m")
    for kwargs, field in [
        ({"page_size": -5}, "page_size"),
        ({"start_offset": -1}, "start_offset"),
        ({"page_token": "garbage"}, "page_token"),
        ({"direction": 9}, "direction"),
    ]:
        error = await fails(
            server.chat.ListMessages(chat_pb2.ListMessagesRequest(parent="rooms/lobby", **kwargs)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert field_violations(error)[0][0] == field
    await fails(
        server.chat.ListMessages(
            chat_pb2.ListMessagesRequest(parent="rooms/lobby", start_offset=99)
        ),
        grpc.StatusCode.OUT_OF_RANGE,
    )


async def test_page_token_from_another_epoch_must_restart(start_server: ServerFactory) -> None:
    async with start_server() as old:
        await make_room(old)
        for i in range(3):
            await post(old, f"m{i}")
        token = (await history(old, page_size=1)).next_page_token
    async with start_server() as restarted:  # a new engine: new epochs
        await make_room(restarted)
        for i in range(3):
            await post(restarted, f"m{i}")
        error = await fails(
            restarted.chat.ListMessages(
                chat_pb2.ListMessagesRequest(parent="rooms/lobby", page_token=token)
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "epoch" in error.details()
        assert "restart" in error.details()
        (failure,) = details(error)
        assert isinstance(failure, error_details_pb2.PreconditionFailure)
        assert failure.violations[0].type == "EPOCH"


def import_request(
    text: str, request_id: str = "", room: str = "rooms/lobby"
) -> chat_pb2.ImportMessagesRequest:
    return chat_pb2.ImportMessagesRequest(
        parent=room, message=chat_pb2.Message(text=text), request_id=request_id
    )


async def test_import_counts_imported_and_duplicates(server: ServerHandle) -> None:
    await make_room(server)
    await post(server, "already", request_id="r1")

    async def requests():
        yield import_request("a", "r1")
        yield import_request("b", "r2")
        yield import_request("c", "r2")
        yield import_request("d")

    response = await within(server.chat.ImportMessages(requests(), metadata=as_user("bot")))
    assert (response.imported_count, response.duplicate_count) == (2, 2)
    assert (response.first_offset, response.last_offset) == (2, 3)
    page = await history(server, direction=chat_pb2.DIRECTION_FORWARD)
    assert [(m.text, m.sender) for m in page.messages] == [
        ("already", "ada"),
        ("b", "bot"),
        ("d", "bot"),
    ]


async def test_import_stops_at_an_invalid_message_keeping_earlier_ones(
    server: ServerHandle,
) -> None:
    await make_room(server)

    async def requests():
        for text in ("a", "b", "c", ""):
            yield import_request(text)
        yield import_request("never")

    error = await fails(server.chat.ImportMessages(requests()), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error)[0][0] == "messages[3].text"
    page = await history(server, direction=chat_pb2.DIRECTION_FORWARD)
    assert [m.text for m in page.messages] == ["a", "b", "c"]


async def test_import_requires_one_room(server: ServerHandle) -> None:
    await make_room(server)
    await make_room(server, "other")

    async def requests():
        yield import_request("a")
        yield import_request("b", room="rooms/other")

    error = await fails(server.chat.ImportMessages(requests()), grpc.StatusCode.INVALID_ARGUMENT)
    ((field, description),) = field_violations(error)
    assert field == "messages[1].parent"
    assert "rooms/other" in description


async def test_empty_import_stores_nothing(server: ServerHandle) -> None:
    async def requests():
        return
        yield

    response = await within(server.chat.ImportMessages(requests()))
    assert response == chat_pb2.ImportMessagesResponse()


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=24), st.integers(1, 2**62), st.booleans())
def test_history_tokens_round_trip(epoch: str, offset: int, forward: bool) -> None:
    token = HistoryToken(epoch, offset, forward)
    assert HistoryToken.decode(token.encode()) == token


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_garbage_history_tokens_are_invalid_argument_naming_page_token(text: str) -> None:
    try:
        outcome = str(HistoryToken.decode(text))
    except InvalidArgument as error:
        outcome = f"refused: {error.field}"
    assert outcome == "refused: page_token" or outcome.startswith("HistoryToken(")
