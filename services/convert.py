"""Engine records and events → protos, and resource names.

Fan-out invariant: ``room_event`` and ``converse_event`` build one proto per engine
Event and keep it in ``event.cache``; every subscriber of the room writes that same
object, so nothing here (or in a servicer) may mutate a proto it got from the cache.
``room_event_bytes`` and ``converse_event_bytes`` serialize that proto once per Event too
(also kept in ``event.cache``): the streaming handlers yield these bytes, and server.py
registers them with a serializer that passes bytes through, so a fan-out to N
subscribers serializes each event once, not N times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf import timestamp_pb2

from services.engine import (
    Cursor,
    Event,
    EventKind,
    MemberRecord,
    MessageRecord,
    RoomRecord,
)
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2

T = TypeVar("T")

_ROOM_EVENT_KEY = "switchboard.v1.RoomEvent"
_CONVERSE_KEY = "switchboard.v1.ConverseResponse"
_ROOM_EVENT_BYTES_KEY = "switchboard.v1.RoomEvent:bytes"
_CONVERSE_BYTES_KEY = "switchboard.v1.ConverseResponse:bytes"


def room_name(room_id: str) -> str:
    return f"rooms/{room_id}"


def message_name(room_id: str, message_id: str) -> str:
    return f"rooms/{room_id}/messages/{message_id}"


def timestamp(time_ns: int) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for nanoseconds since the Unix epoch; None for 0 (unset)."""
    if time_ns == 0:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time_ns)
    return stamp


def room(record: RoomRecord) -> rooms_pb2.Room:
    return rooms_pb2.Room(
        name=room_name(record.room_id),
        display_name=record.display_name,
        description=record.description,
        labels=dict(record.labels),
        create_time=timestamp(record.create_time_ns),
        update_time=timestamp(record.update_time_ns),
        etag=record.etag,
        creator=record.creator,
        last_offset=record.last_offset,
        epoch=record.epoch,
    )


def message(record: MessageRecord) -> chat_pb2.Message:
    return chat_pb2.Message(
        name=message_name(record.room_id, record.message_id),
        text=record.text,
        sender=record.sender,
        create_time=timestamp(record.create_time_ns),
        update_time=timestamp(record.update_time_ns),
        offset=record.offset,
        epoch=record.epoch,
        attributes=dict(record.attributes),
    )


def member(record: MemberRecord) -> presence_pb2.Member:
    return presence_pb2.Member(
        user=record.user,
        connections=record.connections,
        join_time=timestamp(record.join_time_ns),
    )


def subscribed(
    room_id: str, position: Cursor, *, recovered: bool, time_ns: int
) -> chat_pb2.RoomEvent:
    """The first event of a subscription: its id is the cursor of the start position."""
    return chat_pb2.RoomEvent(
        id=position.encode(),
        epoch=position.epoch,
        room=room_name(room_id),
        time=timestamp(time_ns),
        subscribed=chat_pb2.Subscribed(recovered=recovered, offset=position.offset),
    )


def _once(event: Event, key: str, kind: type[T], make: Callable[[], T]) -> T:
    """``make()`` computed once per event and kept in ``event.cache`` under ``key``."""
    cached = event.cache.get(key)
    if isinstance(cached, kind):
        return cached
    value = make()
    event.cache[key] = value
    return value


def room_event(event: Event) -> chat_pb2.RoomEvent:
    """The RoomEvent for ``event``, built once and shared (do not mutate it)."""
    return _once(event, _ROOM_EVENT_KEY, chat_pb2.RoomEvent, lambda: _build_room_event(event))


def converse_event(event: Event) -> chat_pb2.ConverseResponse:
    """The ConverseResponse carrying ``event``, built once and shared (do not mutate it)."""
    return _once(
        event,
        _CONVERSE_KEY,
        chat_pb2.ConverseResponse,
        lambda: chat_pb2.ConverseResponse(event=room_event(event)),
    )


def room_event_bytes(event: Event) -> bytes:
    """The serialized ``room_event(event)``, serialized once per event."""
    return _once(event, _ROOM_EVENT_BYTES_KEY, bytes, lambda: room_event(event).SerializeToString())


def converse_event_bytes(event: Event) -> bytes:
    """The serialized ``converse_event(event)``, serialized once per event."""
    return _once(
        event, _CONVERSE_BYTES_KEY, bytes, lambda: converse_event(event).SerializeToString()
    )


def _build_room_event(event: Event) -> chat_pb2.RoomEvent:
    cursor = event.cursor
    proto = chat_pb2.RoomEvent(
        id=cursor.encode() if cursor is not None else "",
        offset=event.offset,
        epoch=event.epoch,
        room=room_name(event.room_id),
        time=timestamp(event.time_ns),
    )
    kind = event.kind
    if kind is EventKind.MESSAGE_POSTED and event.message is not None:
        proto.message_posted.CopyFrom(message(event.message))
    elif kind is EventKind.MESSAGE_EDITED and event.message is not None:
        proto.message_edited.CopyFrom(message(event.message))
    elif kind is EventKind.MESSAGE_DELETED:
        proto.message_deleted.name = message_name(event.room_id, event.message_id)
    elif kind is EventKind.MEMBER_JOINED:
        proto.member_joined.user = event.user
    elif kind is EventKind.MEMBER_LEFT:
        proto.member_left.user = event.user
    elif kind is EventKind.TYPING:
        proto.typing.CopyFrom(chat_pb2.Typing(user=event.user, active=event.active))
    return proto
