"""The embedded in-memory engine: the default, with no dependencies.

Every public coroutine runs to completion without awaiting, so each call is
atomic with respect to the others on the event loop. That gives the contract
for free: one total order per room, offsets without gaps, and a subscription
whose replay snapshot and live registration happen in the same step (an event
published during catch-up is delivered exactly once, after the replay).

History is bounded by count and by age; the oldest events are evicted first.
Each room stream gets a fresh random epoch when it is created, so a new engine
(a restarted process) never vouches for cursors handed out by an old one.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from services.engine.base import Engine, Subscription
from services.engine.buffer import BufferedSubscription
from services.engine.types import (
    AlreadyExists,
    Cursor,
    CursorAhead,
    EngineClosed,
    EngineConfig,
    EtagMismatch,
    Event,
    EventKind,
    HistoryPage,
    MemberRecord,
    MessageRecord,
    NotFound,
    PostResult,
    RoomChanges,
    RoomRecord,
    message_not_found,
    not_the_sender,
    room_not_found,
)


def _new_epoch() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class _Presence:
    connections: int
    join_time_ns: int


@dataclass(slots=True)
class _RoomStream:
    """One room: its record, its durable event log and its live subscribers."""

    room: RoomRecord
    epoch: str
    next_offset: int = 1
    events: deque[Event] = field(default_factory=deque)
    messages: dict[str, MessageRecord] = field(default_factory=dict)
    request_ids: OrderedDict[str, tuple[int, MessageRecord]] = field(default_factory=OrderedDict)
    subscribers: set[_MemorySubscription] = field(default_factory=set)
    presence: dict[str, _Presence] = field(default_factory=dict)

    @property
    def first_offset(self) -> int:
        return self.events[0].offset if self.events else 0

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1

    def event_at(self, offset: int) -> Event:
        return self.events[offset - self.events[0].offset]

    def fan_out(self, event: Event) -> None:
        for subscriber in list(self.subscribers):
            subscriber.deliver(event)


class _MemorySubscription(BufferedSubscription):
    """A subscriber of one in-memory room; closing releases its presence."""

    def __init__(
        self,
        engine: MemoryEngine,
        stream: _RoomStream,
        user: str | None,
        *,
        replay: list[Event],
        recovered: bool,
        position: Cursor,
    ) -> None:
        super().__init__(
            stream.room.room_id,
            engine.config.subscriber_buffer,
            recovered=recovered,
            position=position,
        )
        self.set_replay(replay)
        self._engine = engine
        self._stream = stream
        self._user = user

    def detach(self) -> None:
        self._stream.subscribers.discard(self)

    async def release(self) -> None:
        self._engine._leave(self._stream, self._user)


class MemoryEngine(Engine):
    """Engine that keeps everything in this process's memory."""

    def __init__(
        self, config: EngineConfig | None = None, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.config = config or EngineConfig()
        self._clock_ns = clock_ns
        self._rooms: dict[str, _RoomStream] = {}
        self._closed = False

    # -- rooms ---------------------------------------------------------------

    def _stream(self, room_id: str) -> _RoomStream:
        if self._closed:
            raise EngineClosed("the engine is shutting down; retry on another instance or later")
        stream = self._rooms.get(room_id)
        if stream is None:
            raise room_not_found(room_id)
        self._evict(stream)
        return stream

    async def create_room(
        self,
        room_id: str,
        *,
        display_name: str,
        description: str,
        labels: Mapping[str, str],
        creator: str,
    ) -> RoomRecord:
        if self._closed:
            raise EngineClosed("the engine is shutting down; retry on another instance or later")
        if room_id in self._rooms:
            raise AlreadyExists(f"room rooms/{room_id} already exists", field="room_id")
        now = self._clock_ns()
        epoch = _new_epoch()
        room = RoomRecord(
            room_id=room_id,
            display_name=display_name,
            description=description,
            labels=dict(labels),
            create_time_ns=now,
            update_time_ns=now,
            etag=secrets.token_hex(6),
            creator=creator,
            epoch=epoch,
            last_offset=0,
        )
        self._rooms[room_id] = _RoomStream(room=room, epoch=epoch)
        return room

    def _record(self, stream: _RoomStream) -> RoomRecord:
        return replace(stream.room, epoch=stream.epoch, last_offset=stream.last_offset)

    async def get_room(self, room_id: str) -> RoomRecord:
        return self._record(self._stream(room_id))

    async def list_rooms(self, *, after: str, limit: int) -> list[RoomRecord]:
        if self._closed:
            raise EngineClosed("the engine is shutting down; retry on another instance or later")
        ids = sorted(room_id for room_id in self._rooms if room_id > after)[:limit]
        return [self._record(self._rooms[room_id]) for room_id in ids]

    @staticmethod
    def _check_etag(stream: _RoomStream, expected_etag: str) -> None:
        if expected_etag and expected_etag != stream.room.etag:
            raise EtagMismatch(
                f"etag {expected_etag!r} does not match the current etag of "
                f"rooms/{stream.room.room_id}; read the room again and retry",
                field="etag",
            )

    async def update_room(
        self, room_id: str, changes: RoomChanges, *, expected_etag: str = ""
    ) -> RoomRecord:
        stream = self._stream(room_id)
        self._check_etag(stream, expected_etag)
        room = stream.room
        stream.room = replace(
            room,
            display_name=room.display_name
            if changes.display_name is None
            else changes.display_name,
            description=room.description if changes.description is None else changes.description,
            labels=room.labels if changes.labels is None else dict(changes.labels),
            update_time_ns=self._clock_ns(),
            etag=secrets.token_hex(6),
        )
        return self._record(stream)

    async def delete_room(self, room_id: str, *, expected_etag: str = "") -> None:
        stream = self._stream(room_id)
        self._check_etag(stream, expected_etag)
        del self._rooms[room_id]
        for subscriber in list(stream.subscribers):
            subscriber.finish(NotFound(f"room rooms/{room_id} was deleted", field="room"))
        stream.subscribers.clear()

    # -- the durable stream --------------------------------------------------

    def _append(self, stream: _RoomStream, event: Event) -> Event:
        event = replace(event, offset=stream.next_offset, epoch=stream.epoch)
        stream.next_offset += 1
        stream.events.append(event)
        self._evict(stream)
        stream.fan_out(event)
        return event

    def _evict(self, stream: _RoomStream) -> None:
        """Drop events beyond the count bound and older than the age bound."""
        horizon = self._clock_ns() - int(self.config.history_max_age_s * 1e9)
        events = stream.events
        while events and (
            len(events) > self.config.history_max_events or events[0].time_ns < horizon
        ):
            gone = events.popleft()
            if gone.kind is EventKind.MESSAGE_POSTED and gone.message is not None:
                stream.messages.pop(gone.message.message_id, None)
        self._expire_request_ids(stream)

    def _expire_request_ids(self, stream: _RoomStream) -> None:
        now = self._clock_ns()
        keys = stream.request_ids
        while keys and (
            len(keys) > self.config.idempotency_max_keys or next(iter(keys.values()))[0] < now
        ):
            keys.popitem(last=False)

    async def post_message(
        self,
        room_id: str,
        *,
        text: str,
        attributes: Mapping[str, str],
        sender: str,
        request_id: str = "",
    ) -> PostResult:
        stream = self._stream(room_id)
        if request_id and request_id in stream.request_ids:
            return PostResult(stream.request_ids[request_id][1], duplicate=True)
        now = self._clock_ns()
        message = MessageRecord(
            room_id=room_id,
            message_id=secrets.token_hex(8),
            text=text,
            sender=sender,
            attributes=dict(attributes),
            create_time_ns=now,
            update_time_ns=0,
            offset=stream.next_offset,
            epoch=stream.epoch,
        )
        stream.messages[message.message_id] = message
        self._append(stream, Event(room_id, EventKind.MESSAGE_POSTED, now, message=message))
        if request_id:
            expires = now + int(self.config.idempotency_window_s * 1e9)
            stream.request_ids[request_id] = (expires, message)
            self._expire_request_ids(stream)
        return PostResult(message, duplicate=False)

    def _own_message(
        self, stream: _RoomStream, message_id: str, actor: str | None
    ) -> MessageRecord:
        message = stream.messages.get(message_id)
        if message is None:
            raise message_not_found(stream.room.room_id, message_id)
        if actor is not None and actor != message.sender:
            raise not_the_sender(stream.room.room_id, message_id, message.sender)
        return message

    async def edit_message(
        self,
        room_id: str,
        message_id: str,
        *,
        text: str | None,
        attributes: Mapping[str, str] | None,
        actor: str | None,
    ) -> MessageRecord:
        stream = self._stream(room_id)
        message = self._own_message(stream, message_id, actor)
        now = self._clock_ns()
        message = replace(
            message,
            text=message.text if text is None else text,
            attributes=message.attributes if attributes is None else dict(attributes),
            update_time_ns=now,
        )
        stream.messages[message_id] = message
        self._append(stream, Event(room_id, EventKind.MESSAGE_EDITED, now, message=message))
        return message

    async def delete_message(self, room_id: str, message_id: str, *, actor: str | None) -> None:
        stream = self._stream(room_id)
        self._own_message(stream, message_id, actor)
        del stream.messages[message_id]
        event = Event(room_id, EventKind.MESSAGE_DELETED, self._clock_ns(), message_id=message_id)
        self._append(stream, event)

    async def read_history(
        self, room_id: str, *, start_offset: int, forward: bool, limit: int
    ) -> HistoryPage:
        stream = self._stream(room_id)
        first, last = stream.first_offset, stream.last_offset
        if start_offset > last and start_offset > 0:
            raise CursorAhead(
                f"start_offset {start_offset} is beyond the newest offset {last} "
                f"of rooms/{room_id}",
                field="start_offset",
            )
        messages: list[MessageRecord] = []
        offset = (start_offset or first) if forward else (start_offset or last)
        if forward:
            offset = max(offset, first)
        step = 1 if forward else -1
        while first and first <= offset <= last and len(messages) < limit:
            event = stream.event_at(offset)
            if event.kind is EventKind.MESSAGE_POSTED and event.message is not None:
                current = stream.messages.get(event.message.message_id)
                if current is not None:
                    messages.append(current)
            offset += step
        more = bool(first) and first <= offset <= last
        return HistoryPage(messages, offset if more else 0, stream.epoch, first, last)

    # -- subscriptions and presence -------------------------------------------

    def _replay_after(self, stream: _RoomStream, cursor: Cursor | None) -> list[Event] | None:
        """The events after ``cursor``, or None when they cannot all be replayed."""
        if cursor is None or cursor.epoch != stream.epoch:
            return None
        if cursor.offset > stream.last_offset:
            raise CursorAhead(
                f"cursor {cursor.encode()!r} is ahead of rooms/{stream.room.room_id}, "
                f"whose newest offset is {stream.last_offset}",
                field="cursor",
            )
        if cursor.offset == stream.last_offset:
            return []
        if not stream.events or cursor.offset + 1 < stream.first_offset:
            return None
        start = cursor.offset + 1 - stream.first_offset
        return [stream.events[i] for i in range(start, len(stream.events))]

    async def subscribe(
        self, room_id: str, *, cursor: Cursor | None, user: str | None
    ) -> Subscription:
        stream = self._stream(room_id)
        replay = self._replay_after(stream, cursor)
        subscription = _MemorySubscription(
            self,
            stream,
            user,
            replay=replay or [],
            recovered=replay is not None,
            position=Cursor(stream.epoch, stream.last_offset),
        )
        stream.subscribers.add(subscription)
        self._join(stream, user)
        return subscription

    def _join(self, stream: _RoomStream, user: str | None) -> None:
        if user is None:
            return
        presence = stream.presence.get(user)
        if presence is not None:
            presence.connections += 1
            return
        now = self._clock_ns()
        stream.presence[user] = _Presence(connections=1, join_time_ns=now)
        stream.fan_out(Event(stream.room.room_id, EventKind.MEMBER_JOINED, now, user=user))

    def _leave(self, stream: _RoomStream, user: str | None) -> None:
        if user is None:
            return
        presence = stream.presence.get(user)
        if presence is None:
            return
        presence.connections -= 1
        if presence.connections == 0:
            del stream.presence[user]
            now = self._clock_ns()
            stream.fan_out(Event(stream.room.room_id, EventKind.MEMBER_LEFT, now, user=user))

    async def publish_typing(self, room_id: str, *, user: str, active: bool) -> None:
        stream = self._stream(room_id)
        now = self._clock_ns()
        stream.fan_out(Event(room_id, EventKind.TYPING, now, user=user, active=active))

    async def list_members(self, room_id: str) -> list[MemberRecord]:
        stream = self._stream(room_id)
        return [
            MemberRecord(user, presence.connections, presence.join_time_ns)
            for user, presence in sorted(stream.presence.items())
        ]

    async def close(self) -> None:
        self._closed = True
        for stream in self._rooms.values():
            for subscriber in list(stream.subscribers):
                subscriber.finish(
                    EngineClosed("the server is shutting down; resume from the last event id")
                )
            stream.subscribers.clear()
