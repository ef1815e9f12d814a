"""RoomService: create, read, list, update and delete rooms.

Invariants: the creator is the caller's identity; ListRooms page tokens are the
base64url of the last room id returned (opaque to clients); UpdateRoom changes
exactly the fields its mask names (an empty mask means every mutable field the
request sets, ``*`` means all of them, cleared ones included); identifier, etag and
output-only fields named in a mask are ignored.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import grpc
from google.protobuf import empty_pb2

from services import convert, errors
from services.engine import Engine, RoomChanges
from services.identity import current_identity
from switchboard.v1 import rooms_pb2, rooms_pb2_grpc

CREATED_METADATA = (("x-http-code", "201"),)
"""Initial metadata of a call that created a resource; the gateway answers 201."""

MUTABLE_ROOM_FIELDS = ("display_name", "description", "labels")
IGNORED_MASK_PATHS = frozenset(
    {"name", "etag", "create_time", "update_time", "creator", "last_offset", "epoch"}
)
"""Identifier, concurrency and output-only fields: named in a mask, they are ignored
(AIP-203), so a mask derived from a whole Room body (the gateway's PATCH) works."""

Context = grpc.aio.ServicerContext[Any, Any]


def encode_room_token(room_id: str) -> str:
    return base64.urlsafe_b64encode(room_id.encode()).decode().rstrip("=")


def decode_room_token(token: str) -> str:
    """The room id a ListRooms page token continues after; InvalidArgument if forged."""
    try:
        room_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        room_id = ""
    if not errors.is_room_id(room_id):
        raise errors.invalid("page_token", token, "is not a page token returned by ListRooms")
    return room_id


def _changes(room: rooms_pb2.Room, paths: list[str]) -> RoomChanges:
    """The RoomChanges an update mask asks for; validates the fields it touches."""
    if not paths:
        paths = [f for f in MUTABLE_ROOM_FIELDS if _is_set(room, f)]
    elif "*" in paths:
        paths = list(MUTABLE_ROOM_FIELDS)
    paths = [path for path in paths if path not in IGNORED_MASK_PATHS]
    for path in paths:
        if path not in MUTABLE_ROOM_FIELDS:
            raise errors.invalid(
                "update_mask.paths",
                path,
                f"is not an updatable field of Room (use {', '.join(MUTABLE_ROOM_FIELDS)} or *)",
            )
    fields = _checked_fields(room)
    return RoomChanges(**{path: fields[path] for path in paths})


def _is_set(room: rooms_pb2.Room, field: str) -> bool:
    return bool(getattr(room, field))


def _checked_fields(room: rooms_pb2.Room) -> dict[str, Any]:
    return {
        "display_name": errors.check_length(
            room.display_name, "room.display_name", max_chars=errors.MAX_DISPLAY_NAME_CHARS
        ),
        "description": errors.check_length(
            room.description, "room.description", max_chars=errors.MAX_DESCRIPTION_CHARS
        ),
        "labels": errors.check_labels(room.labels),
    }


class RoomServicer(rooms_pb2_grpc.RoomServiceServicer):
    """RoomService over an Engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def CreateRoom(
        self, request: rooms_pb2.CreateRoomRequest, context: Context
    ) -> rooms_pb2.Room:
        async with errors.status_on_error(context, resource=convert.room_name(request.room_id)):
            room_id = errors.check_room_id(request.room_id)
            fields = _checked_fields(request.room)
            record = await self._engine.create_room(
                room_id, creator=current_identity().user, **fields
            )
        await context.send_initial_metadata(CREATED_METADATA)
        return convert.room(record)

    async def GetRoom(self, request: rooms_pb2.GetRoomRequest, context: Context) -> rooms_pb2.Room:
        async with errors.status_on_error(context, resource=request.name):
            room_id = errors.parse_room_name(request.name, "name")
            return convert.room(await self._engine.get_room(room_id))

    async def ListRooms(
        self, request: rooms_pb2.ListRoomsRequest, context: Context
    ) -> rooms_pb2.ListRoomsResponse:
        async with errors.status_on_error(context):
            limit = errors.page_size(request.page_size)
            after = decode_room_token(request.page_token) if request.page_token else ""
            records = await self._engine.list_rooms(after=after, limit=limit + 1)
        response = rooms_pb2.ListRoomsResponse(rooms=[convert.room(r) for r in records[:limit]])
        if len(records) > limit:
            response.next_page_token = encode_room_token(records[limit - 1].room_id)
        return response

    async def UpdateRoom(
        self, request: rooms_pb2.UpdateRoomRequest, context: Context
    ) -> rooms_pb2.Room:
        async with errors.status_on_error(context, resource=request.room.name):
            room_id = errors.parse_room_name(request.room.name, "room.name")
            changes = _changes(request.room, list(request.update_mask.paths))
            record = await self._engine.update_room(
                room_id, changes, expected_etag=request.room.etag
            )
            return convert.room(record)

    async def DeleteRoom(
        self, request: rooms_pb2.DeleteRoomRequest, context: Context
    ) -> empty_pb2.Empty:
        async with errors.status_on_error(context, resource=request.name):
            room_id = errors.parse_room_name(request.name, "name")
            await self._engine.delete_room(room_id, expected_etag=request.etag)
            return empty_pb2.Empty()
