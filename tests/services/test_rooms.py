"""RoomService through a real server: CRUD, paging, masks, etags, validation details."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.engine import InvalidArgument
from services.errors import is_room_id
from services.rooms import decode_room_token, encode_room_token
from services.testing import ServerHandle
from switchboard.v1 import rooms_pb2
from tests.services.conftest import as_user, details, fails, field_violations, make_room, within


async def test_create_room_answers_201_and_records_the_caller_as_creator(
    server: ServerHandle,
) -> None:
    request = rooms_pb2.CreateRoomRequest(
        room_id="lobby",
        room=rooms_pb2.Room(name="rooms/ignored", display_name="Lobby", labels={"team": "core"}),
    )
    call = server.rooms.CreateRoom(request, metadata=as_user("ada"))
    room = await within(call)
    assert ("x-http-code", "201") in tuple(await call.initial_metadata())
    assert room.name == "rooms/lobby"
    assert room.display_name == "Lobby"
    assert dict(room.labels) == {"team": "core"}
    assert room.creator == "ada"
    assert room.etag
    assert room.epoch
    assert room.last_offset == 0
    assert room.create_time.ToNanoseconds() > 0


async def test_anonymous_caller_creates_as_anonymous(server: ServerHandle) -> None:
    room = await make_room(server, "quiet")
    assert room.creator == "anonymous"


async def test_create_room_twice_is_already_exists(server: ServerHandle) -> None:
    await make_room(server, "lobby")
    error = await fails(
        server.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby")),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    (info,) = details(error)
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert info.resource_name == "rooms/lobby"


async def test_bad_room_id_names_the_field_and_the_value(server: ServerHandle) -> None:
    for bad in ("Lobby", "-x", "x-", "a" * 64, "", "a_b"):
        error = await fails(
            server.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id=bad)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        ((field, description),) = field_violations(error)
        assert field == "room_id"
        assert (repr(bad) in description) if bad else ("required" in description)


async def test_room_field_limits(server: ServerHandle) -> None:
    too_long = rooms_pb2.Room(display_name="x" * 201)
    error = await fails(
        server.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="r", room=too_long)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "room.display_name"
    labels = rooms_pb2.Room(labels={f"k{i}": "v" for i in range(65)})
    error = await fails(
        server.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="r", room=labels)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "room.labels"
    assert "65" in error.details()


async def test_get_room_and_not_found(server: ServerHandle) -> None:
    created = await make_room(server, "lobby", display_name="Lobby")
    got = await within(server.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/lobby")))
    assert got == created
    error = await fails(
        server.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/nowhere")),
        grpc.StatusCode.NOT_FOUND,
    )
    (info,) = details(error)
    assert info.resource_type == "switchboard.v1.Room"
    assert info.resource_name == "rooms/nowhere"
    error = await fails(
        server.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="lobby")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "name"
    assert "'lobby'" in error.details()


async def test_list_rooms_pages_in_name_order(server: ServerHandle) -> None:
    ids = [f"room-{i:02d}" for i in range(7)]
    for room_id in reversed(ids):
        await make_room(server, room_id)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        request = rooms_pb2.ListRoomsRequest(page_size=3, page_token=token)
        response = await within(server.rooms.ListRooms(request))
        seen += [room.name for room in response.rooms]
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert seen == [f"rooms/{room_id}" for room_id in ids]
    assert pages == 3


async def test_list_rooms_page_size_and_token_validation(server: ServerHandle) -> None:
    for i in range(3):
        await make_room(server, f"r{i}")
    everything = await within(server.rooms.ListRooms(rooms_pb2.ListRoomsRequest(page_size=5000)))
    assert len(everything.rooms) == 3
    assert not everything.next_page_token
    error = await fails(
        server.rooms.ListRooms(rooms_pb2.ListRoomsRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "page_size"
    error = await fails(
        server.rooms.ListRooms(rooms_pb2.ListRoomsRequest(page_token="!!not-a-token")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violations(error)[0][0] == "page_token"


async def test_update_room_by_mask(server: ServerHandle) -> None:
    created = await make_room(server, "lobby", display_name="Lobby", description="old")
    request = rooms_pb2.UpdateRoomRequest(
        room=rooms_pb2.Room(name="rooms/lobby", display_name="Hall", description="ignored"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    updated = await within(server.rooms.UpdateRoom(request))
    assert (updated.display_name, updated.description) == ("Hall", "old")
    assert updated.etag != created.etag

    everything = rooms_pb2.UpdateRoomRequest(
        room=rooms_pb2.Room(name="rooms/lobby"), update_mask=field_mask_pb2.FieldMask(paths=["*"])
    )
    cleared = await within(server.rooms.UpdateRoom(everything))
    assert (cleared.display_name, cleared.description) == ("", "")


async def test_update_room_with_empty_mask_changes_only_set_fields(server: ServerHandle) -> None:
    await make_room(server, "lobby", display_name="Lobby", description="keep")
    request = rooms_pb2.UpdateRoomRequest(
        room=rooms_pb2.Room(name="rooms/lobby", labels={"a": "b"})
    )
    updated = await within(server.rooms.UpdateRoom(request))
    assert (updated.display_name, updated.description) == ("Lobby", "keep")
    assert dict(updated.labels) == {"a": "b"}


async def test_update_room_unknown_mask_path_is_named(server: ServerHandle) -> None:
    await make_room(server, "lobby")
    request = rooms_pb2.UpdateRoomRequest(
        room=rooms_pb2.Room(name="rooms/lobby"),
        update_mask=field_mask_pb2.FieldMask(paths=["owner"]),
    )
    error = await fails(server.rooms.UpdateRoom(request), grpc.StatusCode.INVALID_ARGUMENT)
    ((field, description),) = field_violations(error)
    assert field == "update_mask.paths"
    assert "'owner'" in description


async def test_update_mask_naming_identifier_and_output_fields_ignores_them(
    server: ServerHandle,
) -> None:
    created = await make_room(server, "lobby")
    request = rooms_pb2.UpdateRoomRequest(
        room=rooms_pb2.Room(name="rooms/lobby", etag=created.etag, description="new"),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "etag", "creator", "description"]),
    )
    updated = await within(server.rooms.UpdateRoom(request))
    assert updated.description == "new"
    assert updated.creator == created.creator
    assert updated.etag != created.etag


async def test_update_and_delete_with_stale_etag_fail_precondition(server: ServerHandle) -> None:
    created = await make_room(server, "lobby")
    await within(
        server.rooms.UpdateRoom(
            rooms_pb2.UpdateRoomRequest(
                room=rooms_pb2.Room(name="rooms/lobby", display_name="v2", etag=created.etag)
            )
        )
    )
    stale = rooms_pb2.UpdateRoomRequest(
        room=rooms_pb2.Room(name="rooms/lobby", display_name="v3", etag=created.etag)
    )
    error = await fails(server.rooms.UpdateRoom(stale), grpc.StatusCode.FAILED_PRECONDITION)
    (failure,) = details(error)
    assert isinstance(failure, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "ETAG"
    assert failure.violations[0].subject == "rooms/lobby"
    await fails(
        server.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name="rooms/lobby", etag=created.etag)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    current = await within(server.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/lobby")))
    await within(
        server.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name="rooms/lobby", etag=current.etag))
    )
    await fails(
        server.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/lobby")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_room_without_etag(server: ServerHandle) -> None:
    await make_room(server, "lobby")
    await within(server.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name="rooms/lobby")))
    listed = await within(server.rooms.ListRooms(rooms_pb2.ListRoomsRequest()))
    assert list(listed.rooms) == []


room_ids = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200)
@given(room_ids)
def test_room_page_tokens_round_trip(room_id: str) -> None:
    token = encode_room_token(room_id)
    assert room_id not in token or len(room_id) < 4  # opaque, not the bare id
    assert decode_room_token(token) == room_id


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_any_room_page_token_gives_a_room_id_or_invalid_argument(token: str) -> None:
    try:
        outcome = decode_room_token(token)
    except InvalidArgument as error:
        outcome = f"refused: {error.field}"
    assert outcome == "refused: page_token" or is_room_id(outcome)
