"""This process's room feeds and the pub/sub connection that feeds them.

RoomFeeds keeps at most one live RoomFeed per room, each reading on its own
connection from ``readers`` (a pool apart from the command pool, so a blocking XREAD
never holds a connection commands wait for), and one pub/sub connection for the
whole process, subscribed to the channel of every room with a feed. It routes
what arrives: ephemeral events to the room's subscribers, ``deleted`` (the room is
gone: streams end NOT_FOUND) and ``epoch`` (the room has a new epoch: Redis lost the
history, or the room was lost and created again; streams of another epoch end
UNAVAILABLE). Both name the epoch they are about, so a message published before this
process opened a feed of the room's next epoch never ends that feed. Invariants: a feed is
only used once Redis has confirmed its channel (so a subscriber sees its own
``member_joined``), and a channel is unsubscribed only when no current feed needs it.

Losing the pub/sub connection (Redis down, restarting, a network cut) ends every local
stream with UNAVAILABLE: what was published meanwhile is lost and a restarted Redis may
have lost the rooms too, so clients resume by cursor and learn which. The connection is
then dropped and the next subscribe opens a new one (a dead listener is never reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from services.engine import redis_lua
from services.engine.redis_feed import RoomFeed, history_lost, parse_ephemeral
from services.engine.redis_lua import RoomKeys
from services.engine.types import EngineClosed, EngineError, NotFound

log = logging.getLogger("services.engine.redis")
_READY_TIMEOUT_S = 10.0


class RoomFeeds:
    """The feeds of the rooms this process streams, by room id."""

    def __init__(self, redis: Redis, readers: Redis, prefix: str) -> None:
        self._redis = redis
        self._readers = readers
        self._probe = readers.register_script(redis_lua.PROBE)  # run by idle readers
        self._prefix = prefix
        self._pubsub: PubSub = redis.pubsub()
        self._lock = asyncio.Lock()  # orders (un)subscribe calls on the one connection
        self._feeds: dict[str, RoomFeed] = {}
        self._rooms_by_channel: dict[str, str] = {}
        self._channels: set[str] = set()  # the room channels subscribed
        self._listener: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()  # listeners closing a lost connection
        self._closed = False

    def feed(self, room_id: str, epoch: str, last_offset: int) -> RoomFeed:
        """The room's live feed of ``epoch``, started after ``last_offset`` if new."""
        feed = self._feeds.get(room_id)
        if feed is not None and not feed.ended and feed.epoch == epoch:
            return feed
        if feed is not None:
            feed.end(history_lost(room_id))
        keys = RoomKeys(self._prefix, room_id)

        async def probe() -> str:
            return str(await self._probe(keys=keys.room, args=[secrets.token_hex(8)]))

        feed = RoomFeed(self._readers, room_id, keys.key("stream"), epoch, last_offset, probe)
        feed.start()
        self._feeds[room_id] = feed
        self._rooms_by_channel[keys.channel] = room_id
        return feed

    async def listen(self, feed: RoomFeed) -> None:
        """Subscribes the feed's channel (once) and waits until Redis confirms it.

        Raises the feed's end if it ends meanwhile (e.g. the pub/sub connection was lost),
        EngineClosed if Redis does not confirm in time, and what redis-py raises when it
        cannot reach Redis."""
        async with self._lock:
            if self._listener is None:
                await self._pubsub.subscribe(self._prefix + "engine")
                listener = self._listen(self._pubsub)
                self._listener = asyncio.create_task(listener, name="switchboard-pubsub")
            if not feed.listening and not feed.ended:
                feed.listening = True
                channel = RoomKeys(self._prefix, feed.room_id).channel
                self._channels.add(channel)
                await self._pubsub.subscribe(channel)
        try:
            await asyncio.wait_for(feed.ready.wait(), _READY_TIMEOUT_S)
        except TimeoutError:
            raise EngineClosed(
                f"Redis did not confirm the channel of rooms/{feed.room_id} within "
                f"{_READY_TIMEOUT_S:g} s; retry later"
            ) from None
        if feed.error is not None:
            raise feed.error

    def end(self, room_id: str, error: EngineError) -> None:
        feed = self._feeds.pop(room_id, None)
        if feed is not None:
            feed.end(error)

    async def drop_if_idle(self, feed: RoomFeed) -> None:
        """Stops a feed nobody here reads any more, and its channel unless a newer feed uses it."""
        if feed.subscribers:
            return
        if self._feeds.get(feed.room_id) is feed:
            del self._feeds[feed.room_id]
            feed.end(EngineClosed(f"rooms/{feed.room_id} has no subscribers here"))
        await feed.stop()
        channel = RoomKeys(self._prefix, feed.room_id).channel
        async with self._lock:
            if feed.room_id not in self._feeds and channel in self._channels and not self._closed:
                self._channels.discard(channel)
                try:
                    await self._pubsub.unsubscribe(channel)
                except Exception as error:  # a broken connection, which the listener replaces
                    log.warning("could not unsubscribe %s: %r", channel, error)

    async def _listen(self, pubsub: PubSub) -> None:
        """The pub/sub listener. However it fails (Redis gone, the connection reset), every
        local stream ends UNAVAILABLE and the connection is replaced by a fresh one that the
        next subscribe opens."""
        try:
            await self._route_forever(pubsub)
        except Exception as error:  # any failure: events may have been missed meanwhile
            log.error("lost the pub/sub connection to Redis: %s", error)
            await self._lost(pubsub, error)

    async def _lost(self, pubsub: PubSub, error: Exception) -> None:
        """Ends every local stream and drops ``pubsub`` (the listener's) for a new one."""
        async with self._lock:
            if self._closed or pubsub is not self._pubsub:
                return
            self._pubsub = self._redis.pubsub()
            if self._listener is not None:  # this task: kept referenced until it ends
                self._retired.add(self._listener)
                self._listener.add_done_callback(self._retired.discard)
            self._listener = None
            self._channels.clear()
            feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.end(EngineClosed(f"lost the connection to Redis ({error}); resume later"))
        with contextlib.suppress(Exception):  # the connection is broken already
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py

    async def _route_forever(self, pubsub: PubSub) -> None:
        async for message in pubsub.listen():
            room_id = self._rooms_by_channel.get(message["channel"])
            feed = self._feeds.get(room_id or "")
            if feed is None or room_id is None:
                continue
            if message["type"] == "subscribe":
                feed.ready.set()
            elif message["type"] == "message":
                self._route(feed, room_id, json.loads(message["data"]))

    def _route(self, feed: RoomFeed, room_id: str, data: dict[str, Any]) -> None:
        kind, epoch = data.get("k"), data.get("e")
        if kind == "deleted":
            if not epoch or epoch == feed.epoch:  # not a newer room of that id
                self.end(room_id, NotFound(f"room rooms/{room_id} was deleted", field="room"))
        elif kind == "epoch":
            if epoch != feed.epoch:  # not the epoch this feed already follows
                feed.end(history_lost(room_id))
        else:
            event = parse_ephemeral(room_id, data)
            if event is not None:
                feed.fan_out(event)

    async def close(self) -> None:
        """Ends every local stream with EngineClosed and closes the pub/sub connection."""
        self._closed = True
        for feed in list(self._feeds.values()):
            feed.end(EngineClosed("the server is shutting down; resume from the last event id"))
            await feed.stop()
        self._feeds.clear()
        for listener in [self._listener, *self._retired]:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
