"""The Redis engine's local fan-out: one RoomFeed per room per process.

A RoomFeed owns one task doing blocking XREAD (up to ``_BATCH`` entries per read)
on the room's stream from the last offset it delivered, on a connection of its own
(the engine's reader pool, never the command pool), and hands each durable event to
every local subscriber in offset order. Ephemeral events (typing, presence) and
control messages (room deleted, epoch changed) reach it from the engine's pub/sub
listener. Invariants:

- ``offset`` only grows, and every event with a larger offset reaches every
  subscriber registered now (registration never awaits), so a subscription
  registered at ``offset`` L gets live exactly the events after L;
- publishers never wait: a subscriber whose buffer is full is ended with
  SubscriberOverflow after what it buffered;
- an entry from another epoch ends the feed (the history it was reading is gone);
- a read that found nothing (a whole block without events) is followed by a probe of the
  room (redis_lua.PROBE: four O(1) commands in one script) that ends the feed when Redis lost
  the room or its history (FLUSHALL, eviction, DEL), which no read and no pub/sub message
  would ever tell: the feed never stays open silently on a room that is gone, and notices
  within one block. A busy room's reads never come back empty and cost nothing more;
- one XREAD blocks ``BLOCK_S`` at most, on a connection whose socket timeout is
  longer by ``READ_GRACE_S`` or more (``reader_socket_timeout``): a quiet room's read
  returns empty before the client would call the socket dead, so idleness never ends
  a stream, while a dead connection is still noticed.

Entries and messages are encoded here (see redis_lua for the key layout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.engine.buffer import BufferedSubscription
from services.engine.types import (
    Cursor,
    EngineClosed,
    EngineError,
    Event,
    EventKind,
    MessageRecord,
)

_KINDS = {"p": EventKind.MESSAGE_POSTED, "e": EventKind.MESSAGE_EDITED}
_EPHEMERAL = {
    "typing": EventKind.TYPING,
    "member_joined": EventKind.MEMBER_JOINED,
    "member_left": EventKind.MEMBER_LEFT,
}
BLOCK_S = 5.0
"""The longest one XREAD blocks."""
READ_GRACE_S = 5.0
"""How much longer than a block the reader's socket waits for Redis's answer; it covers
the server's timer resolution (1/hz, 100 ms by default) and a loaded machine."""
_BATCH = 256
_STOP_RETRY_S = 0.1  # how long stop() gives one cancel before repeating it

Arg: TypeAlias = str | int | float
"""A script argument. The client decodes replies (``decode_responses``): every string is str."""
Entries: TypeAlias = list[tuple[str, dict[str, str]]]


def reader_socket_timeout(socket_timeout: float | None) -> float:
    """The socket timeout of a reader connection, from the one the URL asks for (None: none).

    Never under ``BLOCK_S + READ_GRACE_S``: an empty blocking read is not a dead socket.
    """
    return max(socket_timeout or 0.0, BLOCK_S + READ_GRACE_S)


def entries(reply: object) -> Entries:
    """An XRANGE/XREVRANGE reply, typed."""
    return cast(Entries, reply or [])


def message_json(message: MessageRecord) -> str:
    """A message's state as stored in Redis (offset and epoch live beside it)."""
    return json.dumps(
        {
            "id": message.message_id,
            "text": message.text,
            "sender": message.sender,
            "attrs": dict(message.attributes),
            "ct": message.create_time_ns,
            "ut": message.update_time_ns,
        },
        separators=(",", ":"),
    )


def parse_message(room_id: str, text: str, *, offset: int, epoch: str) -> MessageRecord:
    data = json.loads(text)
    return MessageRecord(
        room_id=room_id,
        message_id=data["id"],
        text=data["text"],
        sender=data["sender"],
        attributes=data["attrs"],
        create_time_ns=data["ct"],
        update_time_ns=data["ut"],
        offset=offset,
        epoch=epoch,
    )


def parse_entry(room_id: str, entry_id: str, fields: Mapping[str, str]) -> Event:
    """A stream entry (id ``<offset>-0``) as a durable Event."""
    offset = int(entry_id.split("-", 1)[0])
    epoch, time_ns = fields["e"], int(fields["t"])
    kind = _KINDS.get(fields["k"])
    if kind is None:
        return Event(
            room_id, EventKind.MESSAGE_DELETED, time_ns, offset, epoch, message_id=fields["i"]
        )
    message = parse_message(room_id, fields["m"], offset=int(fields["o"]), epoch=epoch)
    return Event(room_id, kind, time_ns, offset, epoch, message=message)


def parse_ephemeral(room_id: str, data: Mapping[str, object]) -> Event | None:
    kind = _EPHEMERAL.get(str(data.get("k")))
    if kind is None:
        return None
    time_ns = data.get("t")
    return Event(
        room_id,
        kind,
        time_ns if isinstance(time_ns, int) else 0,
        user=str(data.get("u", "")),
        active=data.get("a") is True,
    )


class FeedSubscription(BufferedSubscription):
    """A subscriber behind a RoomFeed. Live events delivered before the replay is known are
    kept; once it is, those the replay already holds (offset ≤ the cursor) are dropped."""

    def __init__(self, feed: RoomFeed, limit: int, release: Callable[[], Awaitable[None]]) -> None:
        super().__init__(
            feed.room_id, limit, recovered=False, position=Cursor(feed.epoch, feed.offset)
        )
        self._feed = feed
        self._release = release
        self._skip_through = 0

    def begin(self, replay: list[Event] | None, cursor: Cursor | None) -> None:
        """Sets the replay (None: not recovered); live events up to the cursor are dropped."""
        self.recovered = replay is not None
        if replay is not None and cursor is not None:
            self.set_replay(replay)
            self._skip_through = max(cursor.offset, self.position.offset)
            if self._queue is not None:
                self._queue = deque(e for e in self._queue if e.offset > self._skip_through)

    def accepts(self, event: Event) -> bool:
        return not (event.durable and event.offset <= self._skip_through)

    def detach(self) -> None:
        self._feed.discard(self)

    async def release(self) -> None:
        await self._release()


class RoomFeed:
    """One room's live stream in this process: a reader task and local subscribers."""

    def __init__(
        self,
        redis: Redis,
        room_id: str,
        stream_key: str,
        epoch: str,
        offset: int,
        probe: Callable[[], Awaitable[str]],
    ) -> None:
        self.room_id = room_id
        self.epoch = epoch
        self.offset = offset
        self.subscribers: set[FeedSubscription] = set()
        self.ready = asyncio.Event()  # set once the room's pub/sub channel is subscribed, or ended
        self.ended = False
        self.error: EngineError | None = None  # what ended the feed
        self.listening = False  # the room's pub/sub channel was asked for
        self._redis = redis
        self._stream_key = stream_key
        self._probe = probe  # the room's epoch now ('' when the room is gone)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name=f"switchboard-feed-{self.room_id}")

    def discard(self, subscriber: FeedSubscription) -> None:
        self.subscribers.discard(subscriber)

    def fan_out(self, event: Event) -> None:
        for subscriber in list(self.subscribers):
            subscriber.deliver(event)

    def end(self, error: EngineError) -> None:
        """Ends every subscriber with ``error``; the feed takes no new ones."""
        self.ended = True
        if self.error is None:
            self.error = error
        self.ready.set()  # a subscribe waiting for the channel learns it ended
        for subscriber in list(self.subscribers):
            subscriber.finish(error)
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancels the reader and waits until it has ended.

        The cancel is repeated until it lands: on Python 3.11 redis-py writes each
        command under ``asyncio.wait_for``, which drops a cancel that arrives as the
        write completes, and the reader would then sit in XREAD for a whole block.
        """
        task = self._task
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_RETRY_S)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _read(self) -> None:
        try:
            await self._follow()
        except (OSError, RedisError) as error:
            self.end(EngineClosed(f"lost the connection to Redis ({error}); resume later"))

    async def _follow(self) -> None:
        while not self.ended:
            reply = await self._redis.xread(
                {self._stream_key: f"{self.offset}-0"}, count=_BATCH, block=int(BLOCK_S * 1000)
            )
            if not reply and not await self._still_there():
                return
            for _, batch in cast(list[tuple[str, Entries]], reply or []):
                for entry_id, fields in batch:
                    if not self._take(parse_entry(self.room_id, entry_id, fields)):
                        return

    async def _still_there(self) -> bool:
        """After an empty read: whether the room and the history this feed follows still exist
        in Redis; if not, the feed ends (UNAVAILABLE: the client resumes and learns which)."""
        epoch = await self._probe()
        if epoch == self.epoch:
            return True
        self.end(history_lost(self.room_id) if epoch else room_lost(self.room_id))
        return False

    def _take(self, event: Event) -> bool:
        """Fans ``event`` out; False (the feed ended) on another epoch or a gap."""
        if event.epoch != self.epoch:
            self.end(history_lost(self.room_id))
            return False
        if event.offset != self.offset + 1:
            self.end(
                EngineClosed(
                    f"events of rooms/{self.room_id} after offset {self.offset} were trimmed "
                    "before this instance read them; resume to reload"
                )
            )
            return False
        self.offset = event.offset
        self.fan_out(event)
        return True


def history_lost(room_id: str) -> EngineError:
    """What ends the streams of a history Redis lost (a new epoch: the room has a new one)."""
    return EngineClosed(
        f"Redis lost the history of rooms/{room_id} (new epoch); resume to reload it"
    )


def room_lost(room_id: str) -> EngineError:
    """What ends the streams of a room Redis lost altogether (FLUSHALL, its keys evicted)."""
    return EngineClosed(
        f"Redis lost rooms/{room_id} with its history; resume to reload it "
        "(the room is NOT_FOUND until it is created again)"
    )
