"""The Redis engine: the engine contract held in Redis, for many service instances.

Every change to a room is one Lua script (redis_lua), so offsets stay 1, 2, 3, …
without gaps however many processes publish, idempotency is checked in the same
step as the append, and a stream Redis lost is noticed (a fresh epoch) exactly
once. Durable events live in a Redis Stream per room (entry id ``<offset>-0``),
trimmed by count and by age; ephemeral events go over pub/sub and are never
stored. Each process reads each room it serves once (redis_feeds, redis_feed) and
fans out locally with bounded buffers, so publishers never wait for subscribers.

Connections: commands (and the one pub/sub connection) share a bounded pool in which
a caller waits for a free connection (``_COMMAND_CONNECTIONS``) rather than failing;
each room reader's blocking XREAD has a connection of its own from a second pool, whose
socket timeout outlasts a block, so readers never starve commands, a burst of
subscribes never exhausts either, and a quiet room is never taken for a dead socket.

Presence (redis_presence): every instance counts its own connections per room in a hash under a
lease it renews (``presence_lease_s``); a user's total is the sum over instances
whose lease is alive, and joined/left are published when it goes 0→1 / 1→0. An
instance that dies without closing stops renewing; the next instance touching
that room's presence (a join, a leave, a heartbeat, ListMembers) sweeps it and
publishes ``left`` for the users it alone held.

Redis down or restarting: a call that cannot reach it raises EngineClosed naming Redis
(UNAVAILABLE), at once when the connection is refused or reset; a lost reader or pub/sub
connection ends the streams that depended on it, and the pub/sub connection is replaced on
the next subscribe, so the process recovers by itself once Redis answers again.

Redis losing data while it runs (FLUSHALL, eviction, DEL): a room's reader that finds nothing
for a whole block probes the room (redis_lua.PROBE), and creating a room or opening a new
epoch announces the epoch on the room's channel, so live streams on a lost room or history
end UNAVAILABLE (within a block, at once when announced) instead of staying open silently,
and never see the new history; presence is counted per room creation (redis_presence).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from services.engine import redis_lua
from services.engine.base import Engine, Subscription
from services.engine.redis_feed import (
    Arg,
    FeedSubscription,
    RoomFeed,
    entries,
    message_json,
    parse_entry,
    parse_message,
    reader_socket_timeout,
)
from services.engine.redis_feeds import RoomFeeds
from services.engine.redis_lua import RoomKeys
from services.engine.redis_presence import PresenceLeases
from services.engine.types import (
    AlreadyExists,
    Cursor,
    CursorAhead,
    EngineClosed,
    EngineConfig,
    EtagMismatch,
    Event,
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

log = logging.getLogger("services.engine.redis")
DEFAULT_PREFIX = "switchboard:"
_COMMAND_CONNECTIONS = 100  # in use at once; more callers wait (a URL's max_connections wins)
_CONNECTION_WAIT_S = 20.0  # then ConnectionError "No connection available."
_READER_CONNECTIONS = 100_000  # one per room this process streams: effectively no cap
_PAGE = 128
REACHABLE_WAIT_S = 2.0  # a PING slower than this counts as Redis out of reach (health)
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a Redis that is down, restarting or out of reach raises (refused, reset, timed out)."""
_SCRIPTS = [
    "STATE",
    "POST",
    "CHANGE",
    "CREATE_ROOM",
    "UPDATE_ROOM",
    "DELETE_ROOM",
]


P = ParamSpec("P")
T = TypeVar("T")


def _reaching_redis(
    method: Callable[Concatenate[RedisEngine, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RedisEngine, P], Coroutine[Any, Any, T]]:
    """An engine call whose Redis errors of reach (down, restarting) become EngineClosed."""

    @functools.wraps(method)
    async def call(engine: RedisEngine, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with engine.reaching_redis():
            return await method(engine, *args, **kwargs)

    return call


@dataclass(frozen=True, slots=True)
class _RoomState:
    epoch: str
    last_offset: int
    first_offset: int
    info: dict[str, str]


class RedisEngine(Engine):
    """Engine whose state lives in Redis; any number of instances may share it."""

    def __init__(
        self,
        url: str,
        config: EngineConfig | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        presence_lease_s: float = 15.0,
    ) -> None:
        self.config = config or EngineConfig()
        self.url = url
        self.address = _redacted(url)
        """The URL without its password, for logs and errors."""
        self.prefix = prefix
        commands = BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            max_connections=_COMMAND_CONNECTIONS,
            timeout=_CONNECTION_WAIT_S,
            maint_notifications_config=_no_maintenance_notifications(),
        )
        self._redis: Redis = Redis.from_pool(commands)
        self._readers: Redis = Redis.from_pool(_reader_pool(url))
        self._scripts = {
            name: self._redis.register_script(getattr(redis_lua, name)) for name in _SCRIPTS
        }
        self._presence = PresenceLeases(self._redis, prefix, presence_lease_s)
        self._feeds = RoomFeeds(self._redis, self._readers, prefix)
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    async def ping(self) -> None:
        """Raises RuntimeError naming the URL when Redis cannot be reached."""
        try:
            await self._redis.ping()
        except (OSError, RedisError) as error:
            raise RuntimeError(f"cannot reach Redis at {self.address!r}: {error}") from None

    async def reachable(self) -> bool:
        """Whether Redis answers a PING within ``REACHABLE_WAIT_S``."""
        try:
            async with asyncio.timeout(REACHABLE_WAIT_S):
                await self._redis.ping()
        except (TimeoutError, OSError, RedisError):
            return False
        return True

    @contextlib.contextmanager
    def reaching_redis(self) -> Iterator[None]:
        """Turns a refused, lost or timed-out connection to Redis into EngineClosed
        (UNAVAILABLE) naming Redis: the call failed, the client retries later."""
        try:
            yield
        except UNREACHABLE as error:
            raise EngineClosed(
                f"Redis at {self.address} is unreachable ({error}); retry later"
            ) from error

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed("the engine is shutting down; retry on another instance or later")

    def _keys(self, room_id: str) -> RoomKeys:
        self._check_open()
        return RoomKeys(self.prefix, room_id)

    def _script(self, name: str) -> AsyncScript:
        return self._scripts[name]

    # -- rooms ---------------------------------------------------------------

    def _limits(self) -> list[Arg]:
        horizon = time.time_ns() - int(self.config.history_max_age_s * 1e9)
        return [secrets.token_hex(8), self.config.history_max_events, horizon]

    async def _state(self, room_id: str) -> _RoomState:
        keys = self._keys(room_id)
        reply = await self._script("STATE")(keys=keys.room, args=self._limits())
        if not reply:
            raise room_not_found(room_id)
        epoch, last, first, flat = reply
        info = dict(zip(flat[::2], flat[1::2], strict=True))
        return _RoomState(epoch, int(last), int(first), info)

    @staticmethod
    def _record(room_id: str, state: _RoomState) -> RoomRecord:
        info = state.info
        return RoomRecord(
            room_id=room_id,
            display_name=info["display_name"],
            description=info["description"],
            labels=json.loads(info["labels"]),
            create_time_ns=int(info["create_time_ns"]),
            update_time_ns=int(info["update_time_ns"]),
            etag=info["etag"],
            creator=info["creator"],
            epoch=state.epoch,
            last_offset=state.last_offset,
        )

    @_reaching_redis
    async def create_room(
        self,
        room_id: str,
        *,
        display_name: str,
        description: str,
        labels: Mapping[str, str],
        creator: str,
    ) -> RoomRecord:
        keys = self._keys(room_id)
        now = time.time_ns()
        info: dict[str, Arg] = {
            "display_name": display_name,
            "description": description,
            "labels": json.dumps(dict(labels)),
            "create_time_ns": now,
            "update_time_ns": now,
            "etag": secrets.token_hex(6),
            "creator": creator,
        }
        pairs = [item for pair in info.items() for item in pair]
        args = [room_id, secrets.token_hex(8), *pairs]
        index = self.prefix + "rooms"
        script = self._script("CREATE_ROOM")
        created = await script(keys=[*keys.room[:7], index, keys.channel], args=args)
        if not created:
            raise AlreadyExists(f"room rooms/{room_id} already exists", field="room_id")
        return await self.get_room(room_id)

    @_reaching_redis
    async def get_room(self, room_id: str) -> RoomRecord:
        return self._record(room_id, await self._state(room_id))

    @_reaching_redis
    async def list_rooms(self, *, after: str, limit: int) -> list[RoomRecord]:
        self._check_open()
        start = f"({after}" if after else "-"
        reply = await self._redis.zrangebylex(self.prefix + "rooms", start, "+", 0, limit)
        ids = cast(list[str], reply)
        rooms = []
        for room_id in ids:
            with contextlib.suppress(NotFound):  # deleted meanwhile
                rooms.append(await self.get_room(room_id))
        return rooms

    @staticmethod
    def _outcome(room_id: str, outcome: str) -> None:
        if outcome == "missing":
            raise room_not_found(room_id)
        if outcome == "etag":
            raise EtagMismatch(
                f"the etag given does not match the current etag of rooms/{room_id}; "
                "read the room again and retry",
                field="etag",
            )

    @_reaching_redis
    async def update_room(
        self, room_id: str, changes: RoomChanges, *, expected_etag: str = ""
    ) -> RoomRecord:
        keys = self._keys(room_id)
        fields: dict[str, Arg] = {"update_time_ns": time.time_ns()}
        fields["etag"] = secrets.token_hex(6)
        if changes.display_name is not None:
            fields["display_name"] = changes.display_name
        if changes.description is not None:
            fields["description"] = changes.description
        if changes.labels is not None:
            fields["labels"] = json.dumps(dict(changes.labels))
        pairs = [item for pair in fields.items() for item in pair]
        outcome = await self._script("UPDATE_ROOM")(
            keys=[keys.key("info")], args=[expected_etag, *pairs]
        )
        self._outcome(room_id, outcome)
        return await self.get_room(room_id)

    @_reaching_redis
    async def delete_room(self, room_id: str, *, expected_etag: str = "") -> None:
        keys = self._keys(room_id)
        args = [room_id, expected_etag, keys.key("inst:")]
        outcome = await self._script("DELETE_ROOM")(
            keys=[*keys.room, self.prefix + "rooms"], args=args
        )
        self._outcome(room_id, outcome)
        self._feeds.end(room_id, NotFound(f"room rooms/{room_id} was deleted", field="room"))

    # -- the durable stream --------------------------------------------------

    @_reaching_redis
    async def post_message(
        self,
        room_id: str,
        *,
        text: str,
        attributes: Mapping[str, str],
        sender: str,
        request_id: str = "",
    ) -> PostResult:
        keys = self._keys(room_id)
        now = time.time_ns()
        draft = MessageRecord(
            room_id, secrets.token_hex(8), text, sender, attributes, now, 0, 0, ""
        )
        window_ms = max(1, int(self.config.idempotency_window_s * 1000))
        args = [*self._limits(), draft.message_id, message_json(draft), now]
        args += [keys.key("req:"), request_id, window_ms]
        outcome, *rest = await self._script("POST")(keys=keys.room, args=args)
        if outcome == "missing":
            raise room_not_found(room_id)
        offset, epoch, stored = rest[0].split(" ", 2)
        message = parse_message(room_id, stored, offset=int(offset), epoch=epoch)
        return PostResult(message, duplicate=outcome == "dup")

    async def _current(self, keys: RoomKeys, message_id: str, actor: str | None) -> str:
        """The message's stored state, after checking it exists and ``actor`` may change it."""
        stored = cast(str | None, await self._redis.hget(keys.key("messages"), message_id))
        if stored is None:
            if not await self._redis.exists(keys.key("info")):
                raise room_not_found(keys.room_id)
            raise message_not_found(keys.room_id, message_id)
        sender = json.loads(stored.split(" ", 1)[1])["sender"]
        if actor is not None and actor != sender:
            raise not_the_sender(keys.room_id, message_id, sender)
        return str(stored)

    async def _change(
        self, room_id: str, message_id: str, actor: str | None, edit: RoomEdit | None
    ) -> MessageRecord | None:
        """Applies ``edit`` (None deletes) as a compare-and-set, retrying on a race."""
        keys = self._keys(room_id)
        while True:
            stored = await self._current(keys, message_id, actor)
            offset, text = stored.split(" ", 1)
            message = parse_message(room_id, text, offset=int(offset), epoch="")
            now = time.time_ns()
            new = None if edit is None else edit.apply(message, now)
            args = [*self._limits(), message_id, stored, now]
            args.append("" if new is None else message_json(new))
            outcome, *rest = await self._script("CHANGE")(keys=keys.room, args=args)
            if outcome == "retry":
                continue
            if outcome != "ok":
                await self._current(keys, message_id, actor)  # raises the right NotFound
                continue
            return None if new is None else dataclasses.replace(new, epoch=rest[0])

    @_reaching_redis
    async def edit_message(
        self,
        room_id: str,
        message_id: str,
        *,
        text: str | None,
        attributes: Mapping[str, str] | None,
        actor: str | None,
    ) -> MessageRecord:
        message = await self._change(room_id, message_id, actor, RoomEdit(text, attributes))
        assert message is not None  # an edit always returns the new state
        return message

    @_reaching_redis
    async def delete_message(self, room_id: str, message_id: str, *, actor: str | None) -> None:
        await self._change(room_id, message_id, actor, None)

    @_reaching_redis
    async def read_history(
        self, room_id: str, *, start_offset: int, forward: bool, limit: int
    ) -> HistoryPage:
        state = await self._state(room_id)
        first, last = state.first_offset, state.last_offset
        if start_offset > last and start_offset > 0:
            raise CursorAhead(
                f"start_offset {start_offset} is beyond the newest offset {last} "
                f"of rooms/{room_id}",
                field="start_offset",
            )
        offset = (start_offset or first) if forward else (start_offset or last)
        if forward:
            offset = max(offset, first)
        messages: list[MessageRecord] = []
        while first and first <= offset <= last and len(messages) < limit:
            offset = await self._history_page(
                self._keys(room_id), state, offset, forward, limit, messages
            )
        more = bool(first) and first <= offset <= last
        return HistoryPage(messages, offset if more else 0, state.epoch, first, last)

    async def _history_page(
        self,
        keys: RoomKeys,
        state: _RoomState,
        offset: int,
        forward: bool,
        limit: int,
        out: list[MessageRecord],
    ) -> int:
        """Appends messages from one chunk of entries to ``out``; returns the next offset."""
        stream = keys.key("stream")
        if forward:
            last = f"{state.last_offset}-0"
            chunk = entries(await self._redis.xrange(stream, f"{offset}-0", last, count=_PAGE))
        else:
            chunk = entries(await self._redis.xrevrange(stream, f"{offset}-0", "-", count=_PAGE))
        ids = [fields["i"] for _, fields in chunk if fields["k"] == "p"]
        states = cast(list[str | None], await self._redis.hmget(keys.key("messages"), ids))
        current = dict(zip(ids, states, strict=True))
        step = 1 if forward else -1
        for entry_id, fields in chunk:
            if len(out) >= limit:
                return offset
            offset = int(entry_id.split("-", 1)[0]) + step
            stored = current.get(fields.get("i", "")) if fields["k"] == "p" else None
            if stored is not None:
                own, text = stored.split(" ", 1)
                out.append(parse_message(keys.room_id, text, offset=int(own), epoch=state.epoch))
        return offset if chunk else (state.last_offset + 1 if forward else 0)

    # -- subscriptions and presence -------------------------------------------

    @_reaching_redis
    async def subscribe(
        self, room_id: str, *, cursor: Cursor | None, user: str | None
    ) -> Subscription:
        state = await self._state(room_id)
        if cursor is not None and cursor.epoch == state.epoch and cursor.offset > state.last_offset:
            raise CursorAhead(
                f"cursor {cursor.encode()!r} is ahead of rooms/{room_id}, "
                f"whose newest offset is {state.last_offset}",
                field="cursor",
            )
        feed = self._feeds.feed(room_id, state.epoch, state.last_offset)
        born = state.info["create_time_ns"]  # which room of that id the presence is in
        subscription = FeedSubscription(
            feed, self.config.subscriber_buffer, lambda: self._release(feed, user, born)
        )
        feed.subscribers.add(subscription)
        try:
            await self._feeds.listen(feed)
            self._renew_presence()
            replay = await self._replay(feed, cursor, subscription.position.offset)
            subscription.begin(replay, cursor)
            if user is not None:
                await self._presence.join(room_id, user, born)
        except BaseException:
            feed.discard(subscription)
            await self._feeds.drop_if_idle(feed)
            raise
        return subscription

    async def _replay(self, feed: RoomFeed, cursor: Cursor | None, upto: int) -> list[Event] | None:
        """The events after ``cursor`` up to ``upto``, or None if they are not all retained."""
        if cursor is None or cursor.epoch != feed.epoch:
            return None
        if cursor.offset >= upto:
            return []
        stream = self._keys(feed.room_id).key("stream")
        reply = await self._redis.xrange(stream, f"{cursor.offset + 1}-0", f"{upto}-0")
        events = [parse_entry(feed.room_id, i, f) for i, f in entries(reply)]
        expected = list(range(cursor.offset + 1, upto + 1))
        if [e.offset for e in events] != expected or any(e.epoch != feed.epoch for e in events):
            return None
        return events

    def _renew_presence(self) -> None:
        if self._renewer is None:
            renew = self._presence.renew_forever()
            self._renewer = asyncio.create_task(renew, name="switchboard-lease")

    async def _release(self, feed: RoomFeed, user: str | None, born: str) -> None:
        """What closing a subscription gives back. It never fails for want of Redis: the
        stream's own status is what its client sees, and a Redis that restarted empty holds
        no presence to release (the local count is dropped either way, so this instance
        stops renewing a lease for it)."""
        await self._feeds.drop_if_idle(feed)
        if not self._closed and user is not None:
            try:
                await self._presence.leave(feed.room_id, user, born)
            except UNREACHABLE as error:
                log.warning(
                    "presence of %r in rooms/%s not released: %s", user, feed.room_id, error
                )

    @_reaching_redis
    async def publish_typing(self, room_id: str, *, user: str, active: bool) -> None:
        keys = self._keys(room_id)
        if not await self._redis.exists(keys.key("info")):
            raise room_not_found(room_id)
        payload = {"k": "typing", "u": user, "a": active, "t": time.time_ns()}
        await self._redis.publish(keys.channel, json.dumps(payload))

    @_reaching_redis
    async def list_members(self, room_id: str) -> list[MemberRecord]:
        self._check_open()
        members = await self._presence.members(room_id)
        if members is None:
            raise room_not_found(room_id)
        return members

    async def close(self) -> None:
        """Ends local subscriptions with EngineClosed, releases presence, closes Redis."""
        if self._closed:
            return
        self._closed = True
        await self._feeds.close()
        await self._presence.release_all()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._readers.aclose()
        await self._redis.aclose()


def _reader_pool(url: str) -> ConnectionPool:
    """Connections for room readers: the URL's settings, but one connection per room
    however many the URL allows, and a socket timeout that outlasts a blocking XREAD
    (redis_feed.reader_socket_timeout) however short the URL's."""
    options: dict[str, Any] = dict(parse_url(url))
    options["socket_timeout"] = reader_socket_timeout(options.get("socket_timeout"))
    options["max_connections"] = _READER_CONNECTIONS
    options["decode_responses"] = True
    options["maint_notifications_config"] = _no_maintenance_notifications()
    return ConnectionPool(**options)


def _no_maintenance_notifications() -> MaintNotificationsConfig:
    """Maintenance notifications off (they serve Redis Enterprise/Cloud failovers). With them
    on ("auto", redis-py's default over RESP3) a pool skips its check that an idle connection
    is still open, so after Redis restarts the first command on each connection left from
    before fails ("Connection closed by server"); with them off the pool reconnects it."""
    return MaintNotificationsConfig(enabled=False)


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class RoomEdit:
    """The fields an edit changes; ``None`` leaves a field as it is."""

    text: str | None
    attributes: Mapping[str, str] | None

    def apply(self, message: MessageRecord, now: int) -> MessageRecord:
        return MessageRecord(
            room_id=message.room_id,
            message_id=message.message_id,
            text=message.text if self.text is None else self.text,
            sender=message.sender,
            attributes=message.attributes if self.attributes is None else dict(self.attributes),
            create_time_ns=message.create_time_ns,
            update_time_ns=now,
            offset=message.offset,
            epoch=message.epoch,
        )
