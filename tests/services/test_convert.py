"""Conversions: timestamps, names, and the per-event proto cache used by fan-out."""

from __future__ import annotations

from services import convert
from services.engine import Cursor, Event, EventKind, MessageRecord

MESSAGE = MessageRecord(
    room_id="lobby",
    message_id="m1",
    text="hi",
    sender="ada",
    attributes={"k": "v"},
    create_time_ns=1_700_000_000_123_456_789,
    update_time_ns=0,
    offset=3,
    epoch="00000000000000aa",
)


def test_timestamps_keep_nanoseconds_and_zero_is_unset() -> None:
    stamp = convert.timestamp(1_700_000_000_123_456_789)
    assert stamp is not None
    assert (stamp.seconds, stamp.nanos) == (1_700_000_000, 123_456_789)
    assert convert.timestamp(0) is None
    assert not convert.message(MESSAGE).HasField("update_time")


def test_room_event_is_built_once_per_event() -> None:
    event = Event(
        "lobby", EventKind.MESSAGE_POSTED, 5, offset=3, epoch="00000000000000aa", message=MESSAGE
    )
    first = convert.room_event(event)
    assert convert.room_event(event) is first
    assert convert.converse_event(event).event == first
    assert convert.converse_event(event) is convert.converse_event(event)
    assert first.id == Cursor("00000000000000aa", 3).encode()
    assert first.message_posted.name == "rooms/lobby/messages/m1"


def test_each_event_kind() -> None:
    def kind_of(event: Event) -> str:
        proto = convert.room_event(event)
        assert proto.room == "rooms/lobby"
        return str(proto.WhichOneof("kind"))

    assert (
        kind_of(Event("lobby", EventKind.MESSAGE_EDITED, 1, 4, "e", message=MESSAGE))
        == "message_edited"
    )
    deleted = Event("lobby", EventKind.MESSAGE_DELETED, 1, 5, "e", message_id="m1")
    assert convert.room_event(deleted).message_deleted.name == "rooms/lobby/messages/m1"
    assert kind_of(Event("lobby", EventKind.MEMBER_JOINED, 1, user="u")) == "member_joined"
    assert kind_of(Event("lobby", EventKind.MEMBER_LEFT, 1, user="u")) == "member_left"
    typing = convert.room_event(Event("lobby", EventKind.TYPING, 1, user="u", active=True))
    assert (typing.typing.user, typing.typing.active, typing.id, typing.offset) == (
        "u",
        True,
        "",
        0,
    )
