"""A real gRPC server on the Redis engine while its redis-server dies and comes back empty.

Each test owns a redis-server (``RedisProcess``, no persistence), stops it with SIGKILL or
a clean ``SHUTDOWN NOSAVE`` and starts it again on the same port with no data, and checks
what a client of the running service sees: while Redis is down every call fails at once
with UNAVAILABLE naming Redis and live streams (Subscribe, Converse, a gateway's Share) end
UNAVAILABLE, while the process stays up and its health says NOT_SERVING (SERVING again once
Redis answers); once Redis is back the
service works again without a restart, the lost rooms are NOT_FOUND, and a cursor or page
token from before never resumes in the new history (``recovered: false``;
FAILED_PRECONDITION ``EPOCH`` for a page token); presence keeps no ghosts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.engine.redis import RedisEngine
from services.testing import ServerHandle
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2
from tests.services.conftest import (
    ServerFactory,
    as_user,
    details,
    eventually,
    fails,
    make_room,
    read,
    within,
)
from tests.services.redis_server import RedisProcess, fresh_prefix
from tests.services.test_share import Gateway

PROMPT_S = 10.0
"""How soon a call or a live stream must fail once Redis is gone (in practice: milliseconds)."""

STOPS: dict[str, Callable[[RedisProcess], None]] = {
    "sigkill": RedisProcess.kill,
    "shutdown-nosave": RedisProcess.shutdown_nosave,
}
stop_modes = pytest.mark.parametrize("stop", list(STOPS.values()), ids=list(STOPS))


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server this test may stop and start again (empty) on the same port."""
    server = RedisProcess(str(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def service(redis: RedisProcess, start_server: ServerFactory) -> AsyncIterator[ServerHandle]:
    """The real server (test identities) on a Redis engine over ``redis``."""
    engine = RedisEngine(redis.url, prefix=fresh_prefix())
    try:
        async with start_server(None, engine) as handle:
            yield handle
    finally:
        await engine.close()


def post_request(text: str, room: str = "lobby") -> chat_pb2.PostMessageRequest:
    return chat_pb2.PostMessageRequest(parent=f"rooms/{room}", message=chat_pb2.Message(text=text))


def subscribe(service: ServerHandle, user: str = "ada", cursor: str = "") -> Any:
    request = chat_pb2.SubscribeRequest(room="rooms/lobby", cursor=cursor)
    return service.chat.Subscribe(request, metadata=as_user(user))


async def posted(call: Any) -> Any:
    """The next message_posted event of a stream (presence events are skipped)."""
    while True:
        event = await read(call)
        if event.WhichOneof("kind") == "message_posted":
            return event


async def presence_event(call: Any) -> tuple[str, str]:
    while True:
        event = await read(call)
        kind = event.WhichOneof("kind")
        if kind in ("member_joined", "member_left"):
            return kind, getattr(event, kind).user


async def members(service: ServerHandle) -> list[str]:
    request = presence_pb2.ListMembersRequest(parent="rooms/lobby")
    return [m.user for m in (await within(service.presence.ListMembers(request))).members]


def names_redis_unavailable(error: grpc.aio.AioRpcError) -> None:
    """UNAVAILABLE whose message names Redis, with the ErrorInfo every UNAVAILABLE carries."""
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "Redis" in (error.details() or ""), error.details()
    reasons = [d.reason for d in details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert reasons == ["ENGINE_CLOSED"]


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail promptly with UNAVAILABLE naming Redis."""
    started = time.monotonic()
    error = await fails(call, grpc.StatusCode.UNAVAILABLE)
    assert time.monotonic() - started < PROMPT_S
    names_redis_unavailable(error)
    return error


async def ends_unavailable(call: Any, since: float) -> None:
    """Reads a live stream to its end: UNAVAILABLE naming Redis, within PROMPT_S of ``since``."""

    async def drain() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await within(drain())
    assert time.monotonic() - since < PROMPT_S
    names_redis_unavailable(caught.value)


async def health_status(service: ServerHandle) -> Any:
    health = health_pb2_grpc.HealthStub(service.channel())
    response = await within(health.Check(health_pb2.HealthCheckRequest(service="")))
    return response.status


async def health_becomes(service: ServerHandle, status: Any) -> None:
    """Health follows the engine's storage within a few of the server's checks."""
    deadline = time.monotonic() + PROMPT_S
    while (seen := await health_status(service)) != status:
        assert time.monotonic() < deadline, f"health still {seen}, expected {status}"
        await asyncio.sleep(0.1)


@stop_modes
async def test_while_redis_is_down_calls_fail_at_once_and_streams_end_unavailable(
    redis: RedisProcess, service: ServerHandle, stop: Callable[[RedisProcess], None]
) -> None:
    await make_room(service)
    await within(service.chat.PostMessage(post_request("before")))
    live = subscribe(service, "ada")
    assert (await read(live)).WhichOneof("kind") == "subscribed"
    queue: asyncio.Queue[chat_pb2.ConverseRequest] = asyncio.Queue()
    queue.put_nowait(chat_pb2.ConverseRequest(room="rooms/lobby"))

    async def requests() -> AsyncIterator[chat_pb2.ConverseRequest]:
        while True:
            yield await queue.get()

    conversation = service.chat.Converse(requests(), metadata=as_user("bea"))
    assert (await read(conversation)).event.WhichOneof("kind") == "subscribed"
    shared = Gateway(service)  # a gateway's shared stream, one subscriber attached
    await shared.open()
    attached = await shared.attach(1, ())
    await shared.until(lambda: attached.live)

    stop(redis)
    stopped = time.monotonic()
    await ends_unavailable(live, stopped)
    await ends_unavailable(conversation, stopped)
    share_error = await shared.ended()
    assert share_error is not None
    assert time.monotonic() - stopped < PROMPT_S
    names_redis_unavailable(share_error)

    lobby = "rooms/lobby"
    await refused(service.chat.PostMessage(post_request("while down")))
    await refused(service.rooms.GetRoom(rooms_pb2.GetRoomRequest(name=lobby)))
    await refused(service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="other")))
    await refused(service.rooms.ListRooms(rooms_pb2.ListRoomsRequest()))
    await refused(service.chat.ListMessages(chat_pb2.ListMessagesRequest(parent=lobby)))
    await refused(service.presence.ListMembers(presence_pb2.ListMembersRequest(parent=lobby)))
    await refused(read(subscribe(service, "cy")))
    await health_becomes(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    redis.start()  # empty: the rooms are gone, the service was never restarted
    await health_becomes(service, health_pb2.HealthCheckResponse.SERVING)
    created = await within(service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="other")))
    assert created.name == "rooms/other"
    follower = service.chat.Subscribe(
        chat_pb2.SubscribeRequest(room="rooms/other"), metadata=as_user("ada")
    )
    assert (await read(follower)).subscribed.offset == 0
    message = await within(service.chat.PostMessage(post_request("back", room="other")))
    assert (message.text, message.offset) == ("back", 1)
    event = await posted(follower)
    assert (event.offset, event.message_posted.text) == (1, "back")
    follower.cancel()


@stop_modes
async def test_after_a_restart_the_service_works_and_old_cursors_never_resume(
    redis: RedisProcess, service: ServerHandle, stop: Callable[[RedisProcess], None]
) -> None:
    await make_room(service)
    for text in ("one", "two", "three"):
        await within(service.chat.PostMessage(post_request(text)))
    live = subscribe(service, "ada")
    assert (await read(live)).subscribed.offset == 3
    before = await within(
        service.chat.ListMessages(chat_pb2.ListMessagesRequest(parent="rooms/lobby", page_size=2))
    )
    assert before.next_page_token
    old_cursor = f"{before.epoch}-3"  # the cursor of "three", as a client resumes after it
    get = rooms_pb2.GetRoomRequest(name="rooms/lobby")
    # Several connections in the service's pool, all of them left over once Redis restarts.
    await asyncio.gather(*(within(service.rooms.GetRoom(get)) for _ in range(8)))

    stop(redis)
    stopped = time.monotonic()
    redis.start()  # at once: a supervisor restarting Redis, no call in between
    await ends_unavailable(live, stopped)

    # Redis lost everything: the room is gone, for every call; none fails for the restart.
    lost = [within(service.rooms.GetRoom(get)) for _ in range(8)]
    for outcome in await asyncio.gather(*lost, return_exceptions=True):
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.NOT_FOUND, outcome.details()
    await fails(read(subscribe(service, "ada", old_cursor)), grpc.StatusCode.NOT_FOUND)
    await fails(service.chat.PostMessage(post_request("lost")), grpc.StatusCode.NOT_FOUND)

    await make_room(service)
    resumed = subscribe(service, "ada", old_cursor)
    head = await read(resumed)
    epoch = head.epoch
    assert epoch != before.epoch
    assert (head.subscribed.recovered, head.subscribed.offset) == (False, 0)  # nothing replayed
    fresh = subscribe(service, "bea")
    assert (await read(fresh)).subscribed.offset == 0
    message = await within(service.chat.PostMessage(post_request("after")))
    assert message.offset == 1
    for call in (resumed, fresh):
        event = await posted(call)
        assert (event.offset, event.epoch, event.message_posted.text) == (1, epoch, "after")
        assert event.id == f"{epoch}-1"

    stale = chat_pb2.ListMessagesRequest(parent="rooms/lobby", page_token=before.next_page_token)
    error = await fails(service.chat.ListMessages(stale), grpc.StatusCode.FAILED_PRECONDITION)
    violations = [
        v.type
        for d in details(error)
        if isinstance(d, error_details_pb2.PreconditionFailure)
        for v in d.violations
    ]
    assert violations == ["EPOCH"]
    page = await within(
        service.chat.ListMessages(chat_pb2.ListMessagesRequest(parent="rooms/lobby"))
    )
    assert [m.text for m in page.messages] == ["after"]
    assert (page.epoch, page.first_offset, page.last_offset) == (epoch, 1, 1)
    resumed.cancel()
    fresh.cancel()


@stop_modes
async def test_presence_after_a_restart_keeps_no_ghosts(
    redis: RedisProcess, service: ServerHandle, stop: Callable[[RedisProcess], None]
) -> None:
    await make_room(service)
    ada, bea = subscribe(service, "ada"), subscribe(service, "bea")
    await read(ada)
    await read(bea)
    assert await members(service) == ["ada", "bea"]

    stop(redis)
    stopped = time.monotonic()
    await ends_unavailable(ada, stopped)
    await ends_unavailable(bea, stopped)
    redis.start()

    await fails(
        service.presence.ListMembers(presence_pb2.ListMembersRequest(parent="rooms/lobby")),
        grpc.StatusCode.NOT_FOUND,
    )
    await make_room(service)
    cy = subscribe(service, "cy")
    assert await presence_event(cy) == ("member_joined", "cy")
    assert await members(service) == ["cy"]
    again = subscribe(service, "ada")
    assert await presence_event(cy) == ("member_joined", "ada")
    assert await members(service) == ["ada", "cy"]
    again.cancel()
    assert await presence_event(cy) == ("member_left", "ada")

    async def only_cy() -> bool:
        return await members(service) == ["cy"]

    await eventually(only_cy)
    cy.cancel()


async def test_the_service_shuts_down_promptly_while_redis_is_down(
    redis: RedisProcess, service: ServerHandle
) -> None:
    await make_room(service)
    live = subscribe(service, "ada")
    await read(live)
    redis.kill()
    started = time.monotonic()
    await ends_unavailable(live, started)
    await within(service.shutdown(grace=1.0))
    assert time.monotonic() - started < PROMPT_S
