"""A real gRPC server on the Redis engine while Redis loses data but keeps running.

No restart here (that is test_redis_restart.py): the connections stay up while Redis loses a
room — ``FLUSHALL``, ``FLUSHDB``, the room's keys deleted (what ``maxmemory`` eviction does) —
or only the room's history (its stream key, or the stream with its offset counter), the room
record staying. What a client must see, per the contract of "Live streams and resume":

- a live Subscribe, Converse or gateway Share stream on the room never goes silent: it ends
  UNAVAILABLE (ErrorInfo ``ENGINE_CLOSED``) with a message naming the room and saying Redis lost
  its history, within one blocking read of the room's reader (``BLOCK_S``) — at once when the
  room is created again meanwhile — and it never delivers an event of the new history;
- a room whose record is gone is NOT_FOUND (a resume too) until it is created again; a room
  that lost only its history gets a new epoch with offsets from 1;
- a cursor from before never resumes in the new history (``recovered: false``) and a new
  subscriber gets offset 1, 2, … of the new epoch;
- presence after a room is created again counts only its new connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from services.engine.redis import RedisEngine
from services.engine.redis_feed import BLOCK_S
from services.engine.redis_lua import RoomKeys
from services.testing import ServerHandle
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2
from tests.services.conftest import (
    ServerFactory,
    as_user,
    details,
    fails,
    make_room,
    read,
    within,
)
from tests.services.redis_server import RedisProcess, fresh_prefix
from tests.services.test_redis_restart import (
    names_redis_unavailable,
    post_request,
    posted,
    subscribe,
)
from tests.services.test_share import Caller, Gateway

NOTICED_S = BLOCK_S + 5.0
"""How soon a live stream must end once Redis lost its room: the rest of one blocking read of
the room's reader, then one probe (in practice at most ``BLOCK_S``); generous for a loaded
machine."""
ANNOUNCED_S = BLOCK_S / 2
"""How soon a live stream must end once a call announced the room's new epoch (in practice:
milliseconds); shorter than any reader's probe could take."""

LOBBY = "rooms/lobby"
RoomEvent = chat_pb2.RoomEvent


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own: the tests flush it."""
    server = RedisProcess(str(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def admin(redis: RedisProcess) -> AsyncIterator[Redis]:
    """A plain client, as an operator's redis-cli (or Redis's own eviction)."""
    client = Redis.from_url(redis.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def service(redis: RedisProcess, start_server: ServerFactory) -> AsyncIterator[ServerHandle]:
    """The real server (test identities) on a Redis engine over ``redis``."""
    engine = RedisEngine(redis.url, prefix=fresh_prefix())
    try:
        async with start_server(None, engine) as handle:
            yield handle
    finally:
        await engine.close()


@pytest.fixture
async def other(
    service: ServerHandle, redis: RedisProcess, start_server: ServerFactory
) -> AsyncIterator[ServerHandle]:
    """A second instance sharing ``service``'s Redis namespace."""
    assert isinstance(service.engine, RedisEngine)
    engine = RedisEngine(redis.url, prefix=service.engine.prefix)
    try:
        async with start_server(None, engine) as handle:
            yield handle
    finally:
        await engine.close()


def room_keys(service: ServerHandle) -> RoomKeys:
    assert isinstance(service.engine, RedisEngine)
    return RoomKeys(service.engine.prefix, "lobby")


async def flushall(admin: Redis, service: ServerHandle) -> None:
    await admin.flushall()


async def flushdb(admin: Redis, service: ServerHandle) -> None:
    await admin.flushdb()


async def delete_room_keys(admin: Redis, service: ServerHandle) -> None:
    """Every key of the room gone, the room index left as it was (eviction picks keys)."""
    keys = [key async for key in admin.scan_iter(match=room_keys(service).key("*"))]
    assert keys
    await admin.delete(*keys)


ROOM_LOSSES: dict[str, Callable[[Redis, ServerHandle], Awaitable[None]]] = {
    "flushall": flushall,
    "flushdb": flushdb,
    "room-keys-deleted": delete_room_keys,
}
room_losses = pytest.mark.parametrize("lose", list(ROOM_LOSSES.values()), ids=list(ROOM_LOSSES))

HISTORY_LOSSES = {
    "stream-deleted": ("stream",),
    "stream-and-counter-deleted": ("stream", "offset", "messages"),
}
history_losses = pytest.mark.parametrize(
    "names", list(HISTORY_LOSSES.values()), ids=list(HISTORY_LOSSES)
)


@dataclass
class Ended:
    """How a live stream ended: the events it delivered after subscribing, and its status."""

    events: list[RoomEvent]
    error: grpc.aio.AioRpcError
    after_s: float  # since the loss


class LiveStreams:
    """A Subscribe, a Converse and a gateway's Share handle, live on the lobby of ``service``."""

    def __init__(self, service: ServerHandle) -> None:
        self.service = service
        self.subscribe = subscribe(service, "ada")
        self._requests: asyncio.Queue[chat_pb2.ConverseRequest] = asyncio.Queue()
        self._requests.put_nowait(chat_pb2.ConverseRequest(room=LOBBY))
        self.converse = service.chat.Converse(self._conversation(), metadata=as_user("bea"))
        self.share = Gateway(service)
        self.handle = Caller()
        self.epoch = ""

    async def _conversation(self) -> AsyncIterator[chat_pb2.ConverseRequest]:
        while True:
            yield await self._requests.get()

    async def open(self) -> None:
        """Opens all three; returns once each is live (``subscribed`` seen)."""
        first = await read(self.subscribe)
        assert first.WhichOneof("kind") == "subscribed"
        self.epoch = first.epoch
        assert (await read(self.converse)).event.WhichOneof("kind") == "subscribed"
        await self.share.open()
        self.handle = await self.share.attach(1, ())
        await self.share.until(lambda: self.handle.live)

    async def ended(self, since: float) -> list[Ended]:
        """Reads each stream to its end (the Subscribe, the Converse, the Share handle)."""

        async def share_end() -> Ended:
            seen = len(self.handle.events)
            error = await self.share.ended()
            assert error is not None, "the Share call ended OK"
            return Ended(self.handle.events[seen:], error, time.monotonic() - since)

        ends = (to_end(self.subscribe, since), to_end(self.converse, since), share_end())
        return list(await within(asyncio.gather(*ends)))


async def to_end(call: Any, since: float) -> Ended:
    """Reads a Subscribe or Converse call to its end, which must be an error status."""
    events: list[RoomEvent] = []

    async def drain() -> None:
        while (message := await call.read()) is not grpc.aio.EOF:
            if not isinstance(message, chat_pb2.ConverseResponse):
                events.append(message)
            elif message.HasField("event"):
                events.append(message.event)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await within(drain())
    return Ended(events, caught.value, time.monotonic() - since)


def lost(ended: Ended, *newcomers: str, bound_s: float = NOTICED_S) -> None:
    """UNAVAILABLE naming Redis and the room, saying its history was lost, in time, and no
    event after the loss: nothing durable, no presence of ``newcomers`` (who came after it).
    The presence events of the streams opened before the loss may still arrive."""
    names_redis_unavailable(ended.error)
    message = ended.error.details() or ""
    assert LOBBY in message, message
    assert "lost" in message, message
    assert ended.after_s < bound_s, f"ended {ended.after_s:.1f} s after the loss"
    durable = [(e.epoch, e.offset) for e in ended.events if e.offset]
    assert durable == [], "a durable event reached a stream on a lost history"
    users = {
        getattr(e, kind).user
        for e in ended.events
        if (kind := e.WhichOneof("kind")) in ("member_joined", "member_left", "typing")
    }
    assert not users & set(newcomers), f"presence of the new room reached an old stream: {users}"


async def health(service: ServerHandle) -> Any:
    stub = health_pb2_grpc.HealthStub(service.channel())
    return (await within(stub.Check(health_pb2.HealthCheckRequest(service="")))).status


async def post(service: ServerHandle, text: str) -> chat_pb2.Message:
    return await within(service.chat.PostMessage(post_request(text)))


async def members(service: ServerHandle) -> list[str]:
    request = presence_pb2.ListMembersRequest(parent=LOBBY)
    return [m.user for m in (await within(service.presence.ListMembers(request))).members]


async def page_token(service: ServerHandle) -> str:
    """A ListMessages page token of the room's current history."""
    request = chat_pb2.ListMessagesRequest(parent=LOBBY, page_size=1)
    token = (await within(service.chat.ListMessages(request))).next_page_token
    assert token
    return token


async def stale(service: ServerHandle, token: str) -> None:
    """A page token of a lost history is FAILED_PRECONDITION (EPOCH)."""
    request = chat_pb2.ListMessagesRequest(parent=LOBBY, page_token=token)
    error = await fails(service.chat.ListMessages(request), grpc.StatusCode.FAILED_PRECONDITION)
    violations = [
        v.type
        for d in details(error)
        if isinstance(d, error_details_pb2.PreconditionFailure)
        for v in d.violations
    ]
    assert violations == ["EPOCH"]


# --- Redis loses the room ----------------------------------------------------------------------


@room_losses
async def test_losing_the_room_ends_live_streams_unavailable_and_the_room_is_not_found(
    service: ServerHandle, admin: Redis, lose: Callable[[Redis, ServerHandle], Awaitable[None]]
) -> None:
    await make_room(service)
    await post(service, "one")
    await post(service, "two")
    live = LiveStreams(service)
    await live.open()

    await lose(admin, service)
    for ended in await live.ended(time.monotonic()):
        lost(ended)

    await fails(
        service.rooms.GetRoom(rooms_pb2.GetRoomRequest(name=LOBBY)), grpc.StatusCode.NOT_FOUND
    )
    await fails(read(subscribe(service, "ada", f"{live.epoch}-2")), grpc.StatusCode.NOT_FOUND)
    await fails(service.chat.PostMessage(post_request("lost")), grpc.StatusCode.NOT_FOUND)
    assert await health(service) == health_pb2.HealthCheckResponse.SERVING  # Redis answers


@pytest.mark.parametrize("where", ["same-instance", "other-instance"])
async def test_a_room_created_again_never_reaches_streams_of_the_lost_one(
    service: ServerHandle, other: ServerHandle, admin: Redis, where: str
) -> None:
    """The room is lost and created again (with posts) before any reader could notice the loss:
    the old streams end at once, and offsets of the new history never reach them."""
    await make_room(service)
    for text in ("one", "two", "three"):
        await post(service, text)
    token = await page_token(service)
    live = LiveStreams(service)
    await live.open()
    watcher = subscribe(other, "dan")  # a stream on the other instance, too
    assert (await read(watcher)).subscribed.offset == 3

    await admin.flushall()
    since = time.monotonic()
    creator = service if where == "same-instance" else other
    await make_room(creator)
    fresh = subscribe(creator, "eve")
    head = await read(fresh)
    epoch = head.epoch
    assert (head.subscribed.offset, head.subscribed.recovered) == (0, False)
    assert epoch != live.epoch
    for text in ("new one", "new two"):
        await post(creator, text)

    for ended in await live.ended(since):
        lost(ended, "eve", bound_s=ANNOUNCED_S)
    lost(await to_end(watcher, since), "eve", bound_s=ANNOUNCED_S)

    for offset, text in ((1, "new one"), (2, "new two")):
        event = await posted(fresh)
        assert (event.offset, event.epoch, event.message_posted.text) == (offset, epoch, text)
        assert event.id == f"{epoch}-{offset}"
    resumed = subscribe(service, "ada", f"{live.epoch}-3")
    assert (await read(resumed)).subscribed.recovered is False
    await post(creator, "new three")
    event = await posted(resumed)
    assert (event.offset, event.epoch) == (3, epoch)
    await stale(service, token)
    fresh.cancel()
    resumed.cancel()


async def test_presence_of_a_room_created_again_counts_only_its_new_streams(
    service: ServerHandle, admin: Redis
) -> None:
    """A stream of the lost room that closes after its user subscribed to the new room does
    not take that user out of the new room's members."""
    engine = service.engine
    await make_room(service)
    old = await engine.subscribe("lobby", cursor=None, user="ada")
    await admin.flushall()
    await make_room(service)
    new = await engine.subscribe("lobby", cursor=None, user="ada")
    watcher = subscribe(service, "bea")
    await read(watcher)
    assert await members(service) == ["ada", "bea"]
    await old.close()
    assert await members(service) == ["ada", "bea"]
    await new.close()
    assert await members(service) == ["bea"]
    watcher.cancel()


# --- Redis loses the room's history, the room stays ------------------------------------------


@history_losses
async def test_losing_the_history_gives_a_new_epoch_and_ends_live_streams_unavailable(
    service: ServerHandle, admin: Redis, names: tuple[str, ...]
) -> None:
    """No call touches the room after the loss: the reader notices it by itself."""
    await make_room(service, display_name="Lobby")
    for text in ("one", "two", "three"):
        await post(service, text)
    token = await page_token(service)
    live = LiveStreams(service)
    await live.open()

    keys = room_keys(service)
    await admin.delete(*(keys.key(name) for name in names))
    for ended in await live.ended(time.monotonic()):
        lost(ended)

    room = await within(service.rooms.GetRoom(rooms_pb2.GetRoomRequest(name=LOBBY)))
    assert room.display_name == "Lobby"  # the room itself stayed
    assert room.epoch != live.epoch
    resumed = subscribe(service, "ada", f"{live.epoch}-3")
    head = await read(resumed)
    assert (head.subscribed.recovered, head.subscribed.offset, head.epoch) == (False, 0, room.epoch)
    message = await post(service, "after")
    assert (message.offset, message.text) == (1, "after")
    event = await posted(resumed)
    assert (event.offset, event.epoch, event.message_posted.text) == (1, room.epoch, "after")
    page = await within(service.chat.ListMessages(chat_pb2.ListMessagesRequest(parent=LOBBY)))
    assert ([m.text for m in page.messages], page.epoch) == (["after"], room.epoch)
    await stale(service, token)
    resumed.cancel()


@history_losses
async def test_a_post_after_the_history_was_lost_starts_a_new_epoch_at_offset_one(
    service: ServerHandle, other: ServerHandle, admin: Redis, names: tuple[str, ...]
) -> None:
    """A post (on another instance) is the first to touch the room after the loss: it opens the
    new epoch, the old streams end at once and never see it, a cursor from before is stale."""
    await make_room(service)
    for text in ("one", "two", "three"):
        await post(service, text)
    live = LiveStreams(service)
    await live.open()

    keys = room_keys(service)
    await admin.delete(*(keys.key(name) for name in names))
    since = time.monotonic()
    messages = [await post(other, text) for text in ("a", "b", "c", "d")]
    assert [m.offset for m in messages] == [1, 2, 3, 4]
    epoch = (await within(other.rooms.GetRoom(rooms_pb2.GetRoomRequest(name=LOBBY)))).epoch
    assert epoch != live.epoch
    for ended in await live.ended(since):
        lost(ended, bound_s=ANNOUNCED_S)

    resumed = subscribe(service, "ada", f"{live.epoch}-3")
    head = await read(resumed)
    assert (head.subscribed.recovered, head.subscribed.offset, head.epoch) == (False, 4, epoch)
    resumed.cancel()


async def test_a_resume_that_opens_the_new_epoch_stays_live(
    service: ServerHandle, admin: Redis
) -> None:
    """The first call after the loss is a resume on the instance whose streams are still on the
    old epoch: it opens the new epoch, which is announced to every instance — an announcement
    that ends the old streams, never the resumed one that is already on the new epoch."""
    await make_room(service)
    for text in ("one", "two", "three"):
        await post(service, text)
    live = LiveStreams(service)
    await live.open()

    await admin.delete(room_keys(service).key("stream"))
    since = time.monotonic()
    resumed = subscribe(service, "cy", f"{live.epoch}-3")
    head = await read(resumed)
    assert (head.subscribed.recovered, head.subscribed.offset) == (False, 0)
    assert head.epoch != live.epoch
    for ended in await live.ended(since):
        lost(ended, "cy", bound_s=ANNOUNCED_S)
    message = await post(service, "after")
    event = await posted(resumed)
    assert (event.offset, event.epoch, event.message_posted.text) == (1, head.epoch, "after")
    assert message.offset == 1
    resumed.cancel()
