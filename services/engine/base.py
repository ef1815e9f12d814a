"""The engine interface: what every storage implementation offers the servicers."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping

from services.engine.types import (
    Cursor,
    Event,
    HistoryPage,
    MemberRecord,
    MessageRecord,
    PostResult,
    RoomChanges,
    RoomRecord,
)


class Subscription(abc.ABC):
    """A live view of one room's stream for one subscriber.

    ``recovered`` and ``position`` are known as soon as the subscription exists.
    Iterating yields the replayed events (when recovered), then live events, in
    offset order for durable events, each exactly once. The iterator ends by
    raising: SubscriberOverflow when the buffer overflowed (after what was
    buffered has been yielded), NotFound when the room is deleted, EngineClosed
    on shutdown. ``close`` is idempotent and releases presence.

    A caller that serves the replay itself and takes live events from elsewhere (a
    shared stream, services/share.py) calls ``detach`` and ``take_replay`` instead of
    iterating: the subscription then only holds its user's presence until ``close``.
    """

    recovered: bool
    position: Cursor  # the live stream starts after this position

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Event]: ...

    @abc.abstractmethod
    def take_replay(self) -> list[Event]:
        """Removes and returns the replay not yet yielded, in order, and drops the live
        events buffered so far (call ``detach`` first: nothing more arrives then)."""

    @abc.abstractmethod
    def detach(self) -> None:
        """Stops live deliveries for good (idempotent); presence is kept until ``close``."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class Engine(abc.ABC):
    """Rooms, their ordered event streams, history, idempotency and presence."""

    @abc.abstractmethod
    async def create_room(
        self,
        room_id: str,
        *,
        display_name: str,
        description: str,
        labels: Mapping[str, str],
        creator: str,
    ) -> RoomRecord: ...

    @abc.abstractmethod
    async def get_room(self, room_id: str) -> RoomRecord: ...

    @abc.abstractmethod
    async def list_rooms(self, *, after: str, limit: int) -> list[RoomRecord]:
        """Rooms whose id sorts after ``after`` (all when empty), in id order."""

    @abc.abstractmethod
    async def update_room(
        self, room_id: str, changes: RoomChanges, *, expected_etag: str = ""
    ) -> RoomRecord: ...

    @abc.abstractmethod
    async def delete_room(self, room_id: str, *, expected_etag: str = "") -> None:
        """Deletes the room; its subscriptions end with NotFound."""

    @abc.abstractmethod
    async def post_message(
        self,
        room_id: str,
        *,
        text: str,
        attributes: Mapping[str, str],
        sender: str,
        request_id: str = "",
    ) -> PostResult: ...

    @abc.abstractmethod
    async def edit_message(
        self,
        room_id: str,
        message_id: str,
        *,
        text: str | None,
        attributes: Mapping[str, str] | None,
        actor: str | None,
    ) -> MessageRecord:
        """Edits a message. ``actor`` must be the sender (PermissionDenied
        otherwise); ``None`` means an administrator, who may edit any message."""

    @abc.abstractmethod
    async def delete_message(self, room_id: str, message_id: str, *, actor: str | None) -> None: ...

    @abc.abstractmethod
    async def read_history(
        self, room_id: str, *, start_offset: int, forward: bool, limit: int
    ) -> HistoryPage:
        """Messages posted at offsets from ``start_offset`` (inclusive) in the
        given direction. ``start_offset`` 0 means the newest event (backward)
        or the oldest retained one (forward). Edited messages show their
        latest state; deleted ones are left out."""

    @abc.abstractmethod
    async def subscribe(
        self, room_id: str, *, cursor: Cursor | None, user: str | None
    ) -> Subscription:
        """Opens a subscription. With a cursor of this room's epoch whose
        missed events are all retained: ``recovered`` is True and the missed
        events come first. Otherwise ``recovered`` is False and nothing is
        replayed. A cursor ahead of the stream raises CursorAhead. ``user``
        joins the room's presence until the subscription closes; None is a
        feed that is nobody (no presence, no joined/left)."""

    @abc.abstractmethod
    async def publish_typing(self, room_id: str, *, user: str, active: bool) -> None: ...

    @abc.abstractmethod
    async def list_members(self, room_id: str) -> list[MemberRecord]: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Ends every subscription with EngineClosed and refuses further calls."""

    async def reachable(self) -> bool:
        """Whether the engine's storage answers now (the server's health follows it); an
        embedded engine always does."""
        return True
