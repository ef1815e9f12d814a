"""The engine's vocabulary: records, events, cursors, configuration and errors.

Nothing here knows about gRPC, HTTP or protobuf. Invariants every engine keeps:

- each room has one totally ordered stream of durable events with offsets
  1, 2, 3, … and no gaps, and an ``epoch`` that changes whenever the engine can no
  longer vouch for the history (a fresh in-memory engine starts new epochs);
- ephemeral events (presence, typing) have offset 0 and are never stored;
- times are integer nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_CURSOR_RE = re.compile(r"([0-9a-f]{16})-([0-9]{1,19})")


class EngineError(Exception):
    """Base of every error an engine raises; messages name the offending value."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(EngineError):
    """A value is malformed; ``field`` names the request field when known."""


class NotFound(EngineError):
    """The room or message does not exist (or was deleted)."""


class AlreadyExists(EngineError):
    """A room with that id exists already."""


class EtagMismatch(EngineError):
    """A conditional update or delete lost the race (the etag changed)."""


class PermissionDenied(EngineError):
    """The actor may not change this resource (e.g. someone else's message)."""


class CursorAhead(EngineError):
    """The cursor names an offset the stream has not reached yet."""


class SubscriberOverflow(EngineError):
    """The subscriber fell behind by more than its buffer; it resumes by cursor."""


class EngineClosed(EngineError):
    """The engine is shutting down; clients should resume elsewhere or later."""


def room_not_found(room_id: str) -> NotFound:
    return NotFound(f"room rooms/{room_id} does not exist", field="room")


def message_not_found(room_id: str, message_id: str) -> NotFound:
    return NotFound(f"message rooms/{room_id}/messages/{message_id} does not exist", field="name")


def not_the_sender(room_id: str, message_id: str, sender: str) -> PermissionDenied:
    return PermissionDenied(
        f"only the sender ({sender}) or an administrator may change "
        f"rooms/{room_id}/messages/{message_id}"
    )


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a room's stream: after ``offset`` in ``epoch``."""

    epoch: str
    offset: int

    def encode(self) -> str:
        return f"{self.epoch}-{self.offset}"

    @classmethod
    def parse(cls, text: str, *, field: str = "cursor") -> Cursor:
        """Parse an opaque cursor string; InvalidArgument names ``field`` if malformed."""
        match = _CURSOR_RE.fullmatch(text)
        if match is None:
            raise InvalidArgument(
                f"{field} {text[:80]!r} is not a cursor; pass the id of an event "
                "received from this room",
                field=field,
            )
        return cls(match.group(1), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Limits of an engine; every bound is configurable."""

    history_max_events: int = 10_000
    history_max_age_s: float = 24 * 3600.0
    idempotency_window_s: float = 600.0
    idempotency_max_keys: int = 100_000
    subscriber_buffer: int = 1024


@dataclass(frozen=True, slots=True)
class RoomRecord:
    room_id: str
    display_name: str
    description: str
    labels: Mapping[str, str]
    create_time_ns: int
    update_time_ns: int
    etag: str
    creator: str
    epoch: str
    last_offset: int


@dataclass(frozen=True, slots=True)
class RoomChanges:
    """Fields to change on update; ``None`` leaves a field as it is."""

    display_name: str | None = None
    description: str | None = None
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    room_id: str
    message_id: str
    text: str
    sender: str
    attributes: Mapping[str, str]
    create_time_ns: int
    update_time_ns: int  # 0 when never edited
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class PostResult:
    message: MessageRecord
    duplicate: bool  # True when request_id was seen before: nothing new was stored


class EventKind(enum.Enum):
    MESSAGE_POSTED = "message_posted"
    MESSAGE_EDITED = "message_edited"
    MESSAGE_DELETED = "message_deleted"
    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    TYPING = "typing"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a room. Durable kinds (messages) have ``offset`` > 0."""

    room_id: str
    kind: EventKind
    time_ns: int
    offset: int = 0
    epoch: str = ""
    message: MessageRecord | None = None  # posted/edited: the message's new state
    message_id: str = ""  # deleted: the message's id
    user: str = ""  # member joined/left, typing
    active: bool = False  # typing
    cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    """Per-event scratch space for encoders (e.g. a proto built once for all subscribers)."""

    @property
    def durable(self) -> bool:
        return self.offset > 0

    @property
    def cursor(self) -> Cursor | None:
        return Cursor(self.epoch, self.offset) if self.offset > 0 else None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[MessageRecord]
    next_offset: int  # where the next page starts (inclusive); 0 when there is none
    epoch: str
    first_offset: int  # oldest retained offset (0 when empty)
    last_offset: int  # newest offset (0 when no events yet)


@dataclass(frozen=True, slots=True)
class MemberRecord:
    user: str
    connections: int
    join_time_ns: int
