"""StreamShareService: one Share call serves many subscribers of a room, each as if it had
called Subscribe itself — exactly-once in-order delivery, resume, presence, auth and expiry.

``Gateway`` plays the gateway's side of a real Share call with the generated stub: it sends
open/attach/detach and routes every response to the handles it names (or, with none named,
to every live handle), so each test reads what each of the gateway's subscribers would see.
The server runs the real AuthInterceptor with real signed tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.authconfig import AuthConfig
from services.config import ServiceConfig
from services.engine import Cursor, Engine, Event
from services.engine.memory import MemoryEngine
from services.engine.redis import RedisEngine
from services.identity import Identity
from services.share import SharedStream
from services.testing import ServerHandle, running_server
from switchboard.gateway.v1 import share_pb2, share_pb2_grpc
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2
from tests.gateway.signing import deployment_config, token
from tests.services.conftest import eventually, within
from tests.services.redis_server import fresh_prefix

SUBSCRIBE = "/switchboard.v1.ChatService/Subscribe"
Metadata = tuple[tuple[str, str], ...]


def bearer(user: str, *roles: str, ttl: int = 300) -> Metadata:
    return (("authorization", f"Bearer {token(user, roles or ('member',), ttl=ttl)}"),)


ADMIN = bearer("root", "admin")


@dataclass
class Caller:
    """One attached handle as the gateway's subscriber sees it."""

    events: list[chat_pb2.RoomEvent] = field(default_factory=list)
    live: bool = False
    end: status_pb2.Status | None = None

    @property
    def offsets(self) -> list[int]:
        return [event.offset for event in self.events if event.offset]

    @property
    def posted(self) -> list[str]:
        return [e.message_posted.text for e in self.events if e.HasField("message_posted")]

    def saw(self, kind: str, user: str) -> bool:
        return any(getattr(e, kind).user == user for e in self.events if e.HasField(kind))


def route(callers: dict[int, Caller], response: share_pb2.ShareResponse) -> None:
    """Delivers one response as the contract says: to the handles listed, else to every live one."""
    if response.handles:
        targets = [callers[h] for h in response.handles if h in callers]
    else:
        targets = [caller for caller in callers.values() if caller.live]
    for caller in targets:
        if response.HasField("message"):
            caller.events.append(chat_pb2.RoomEvent.FromString(response.message))
        if response.live:
            caller.live = True
        if response.HasField("end"):
            caller.end, caller.live = response.end, False


class Gateway:
    """The gateway's side of one Share call (see the module docstring)."""

    def __init__(self, server: ServerHandle) -> None:
        stub = share_pb2_grpc.StreamShareServiceStub(server.channel())
        self.call = stub.Share()
        self.callers: dict[int, Caller] = {}
        self.responses: list[share_pb2.ShareResponse] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.done = False
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def send(self, request: share_pb2.ShareRequest) -> None:
        await within(self.call.write(request))
        self.read()

    def read(self) -> None:
        """Starts routing responses (once)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def open(self, room: str = "rooms/lobby", *, method: str = SUBSCRIBE) -> None:
        request = chat_pb2.SubscribeRequest(room=room).SerializeToString()
        await self.send(
            share_pb2.ShareRequest(open=share_pb2.ShareOpen(method=method, request=request))
        )

    async def attach(
        self, handle: int, metadata: Metadata, *, cursor: str = "", room: str = "rooms/lobby"
    ) -> Caller:
        caller = self.callers[handle] = Caller()
        request = chat_pb2.SubscribeRequest(room=room, cursor=cursor).SerializeToString()
        entries = [share_pb2.ShareMetadata(key=k, value=v.encode()) for k, v in metadata]
        attach = share_pb2.ShareAttach(handle=handle, request=request, metadata=entries)
        await self.send(share_pb2.ShareRequest(attach=attach))
        return caller

    async def detach(self, handle: int) -> None:
        del self.callers[handle]
        await self.send(share_pb2.ShareRequest(detach=share_pb2.ShareDetach(handle=handle)))

    async def until(self, condition: Callable[[], bool]) -> None:
        """Waits until ``condition()`` holds after some response (fails if the call ended)."""

        async def wait() -> None:
            while not condition():
                assert not self.done, f"the Share call ended: {self.error}"
                self._changed.clear()
                await self._changed.wait()

        await within(wait())

    async def ended(self) -> grpc.aio.AioRpcError | None:
        """Waits for the call to end; its error (None when it ended OK)."""
        self.read()
        assert self._reader is not None
        await within(self._reader)
        return self.error

    async def close(self) -> None:
        self.call.cancel()
        if self._reader is not None:  # a locally cancelled call raises CancelledError there
            await within(asyncio.gather(self._reader, return_exceptions=True))

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.append(response)
                route(self.callers, response)
                self._changed.set()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
        finally:
            self.done = True
            self._changed.set()


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def auth(tmp_path: Path) -> AuthConfig:
    return deployment_config(tmp_path)


@pytest.fixture(params=["memory", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    made: Engine
    if request.param == "memory":
        made = MemoryEngine()
    else:
        made = RedisEngine(request.getfixturevalue("redis_url"), prefix=fresh_prefix())
    yield made
    await made.close()


@pytest.fixture
async def server(auth: AuthConfig) -> AsyncIterator[ServerHandle]:
    async with running_server(auth=auth) as handle:
        yield handle


@pytest.fixture
async def gateway(server: ServerHandle) -> AsyncIterator[Gateway]:
    await lobby(server)
    opened = Gateway(server)
    await opened.open()
    yield opened
    await opened.close()


async def lobby(server: ServerHandle) -> rooms_pb2.Room:
    request = rooms_pb2.CreateRoomRequest(room_id="lobby")
    return await within(server.rooms.CreateRoom(request, metadata=bearer("root", "admin")))


async def post(server: ServerHandle, text: str) -> chat_pb2.Message:
    request = chat_pb2.PostMessageRequest(parent="rooms/lobby", message=chat_pb2.Message(text=text))
    return await within(server.chat.PostMessage(request, metadata=bearer("ada")))


async def members(server: ServerHandle) -> dict[str, int]:
    request = presence_pb2.ListMembersRequest(parent="rooms/lobby")
    reply = await within(server.presence.ListMembers(request, metadata=ADMIN))
    return {member.user: member.connections for member in reply.members}


async def subscribe_error(
    server: ServerHandle, metadata: Metadata, cursor: str
) -> status_pb2.Status:
    """What a private Subscribe with this metadata and cursor ends with, as a google.rpc.Status."""
    request = chat_pb2.SubscribeRequest(room="rooms/lobby", cursor=cursor)
    call = server.chat.Subscribe(request, metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await within(_drain(call))
    status = rpc_status.from_call(caught.value)
    if status is None:  # the interceptor's rejections carry no details
        code, message = caught.value.code().value[0], caught.value.details() or ""
        return status_pb2.Status(code=code, message=message)
    return status


async def _drain(
    call: grpc.aio.UnaryStreamCall[chat_pb2.SubscribeRequest, chat_pb2.RoomEvent],
) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


# --- exactly once, in order ---------------------------------------------------------------------


async def test_each_handle_gets_every_event_once_in_order_while_posting_and_attaching(
    engine: Engine, auth: AuthConfig
) -> None:
    """Three publishers post 120 messages while twelve handles attach, a third of them with a
    cursor at the newest acknowledged offset (often ahead of what the call has delivered), a
    third a few events back (replayed per handle), the rest without a cursor."""
    async with running_server(engine=engine, auth=auth) as server:
        room = await lobby(server)
        for i in range(3):
            await post(server, f"before {i}")
        gateway = Gateway(server)
        await gateway.open()
        newest, acked = 3, asyncio.Condition()

        async def publish(name: str) -> None:
            nonlocal newest
            for i in range(40):
                message = await post(server, f"{name}{i}")
                async with acked:
                    newest = max(newest, message.offset)
                    acked.notify_all()

        async def acknowledged(offset: int) -> int:
            """The newest acknowledged offset, once it is ``offset`` or more."""
            async with acked:
                await acked.wait_for(lambda: newest >= offset)
                return newest

        publishers = [asyncio.create_task(publish(name)) for name in "xyz"]
        users, cursors = ("alice", "bob", "carol"), {}
        for handle in range(12):
            seen = await within(acknowledged(3 + 9 * handle))
            behind = (None, 0, 5)[handle % 3]
            if behind is not None:
                cursors[handle] = seen - behind
            cursor = Cursor(room.epoch, cursors[handle]).encode() if handle in cursors else ""
            await gateway.attach(handle, bearer(users[handle % 3]), cursor=cursor)
        await within(asyncio.gather(*publishers))
        last = 123
        await gateway.until(lambda: all(c.offsets[-1:] == [last] for c in gateway.callers.values()))

        for handle, caller in gateway.callers.items():
            head = caller.events[0].subscribed
            assert caller.events[0].HasField("subscribed")
            assert head.recovered is (handle in cursors)
            start = cursors.get(handle, head.offset)
            assert caller.offsets == list(range(start + 1, last + 1)), handle
        assert await members(server) == {"alice": 4, "bob": 4, "carol": 4}
        await gateway.close()
        await eventually(lambda: _no_members(server))


async def _no_members(server: ServerHandle) -> bool:
    return await members(server) == {}


async def test_a_handle_ahead_of_the_feed_goes_live_exactly_after_its_position() -> None:
    """Attaches handled before the feed has delivered what they already count as seen: the
    handle waits (pending) and goes live exactly when the feed reaches its position."""
    engine = MemoryEngine()
    room = await engine.create_room(
        "lobby", display_name="", description="", labels={}, creator="root"
    )
    feed = await engine.subscribe("lobby", cursor=None, user=None)
    shared = SharedStream(engine, "lobby", feed, None, Identity("alice"))
    callers = {1: Caller(), 2: Caller()}

    async def step(item: share_pb2.ShareRequest | Event) -> None:
        for response in await shared.step(item):
            if isinstance(response, bytes):  # a broadcast, serialized once per event
                response = share_pb2.ShareResponse.FromString(response)
            route(callers, response)

    def attach(handle: int, cursor: str) -> share_pb2.ShareRequest:
        request = chat_pb2.SubscribeRequest(room="rooms/lobby", cursor=cursor)
        return share_pb2.ShareRequest(
            attach=share_pb2.ShareAttach(handle=handle, request=request.SerializeToString())
        )

    try:
        for i in range(1, 5):
            await engine.post_message("lobby", text=f"m{i}", attributes={}, sender="ada")
        await step(attach(1, Cursor(room.epoch, 2).encode()))  # resumes after 2; the feed is at 0
        await step(attach(2, ""))  # starts after 4, the newest offset
        assert [c.live for c in callers.values()] == [False, False]
        events = aiter(feed)
        for _ in range(5):  # m1..m4 and alice's member_joined
            await step(await within(anext(events)))
        await engine.post_message("lobby", text="m5", attributes={}, sender="ada")
        await step(await within(anext(events)))
    finally:
        await shared.close()
        await engine.close()
    assert callers[1].events[0].subscribed.recovered is True
    assert callers[1].posted == ["m3", "m4", "m5"]
    assert callers[2].events[0].subscribed.offset == 4
    assert callers[2].posted == ["m5"]


# --- resume ---------------------------------------------------------------------------------


async def test_resume_replays_missed_events_then_live_without_a_seam(
    server: ServerHandle, gateway: Gateway
) -> None:
    messages = [await post(server, f"m{i}") for i in range(1, 6)]
    epoch = messages[0].epoch
    watcher = await gateway.attach(1, bearer("wendy"))
    await gateway.until(lambda: watcher.live)
    behind = await gateway.attach(2, bearer("alice"), cursor=Cursor(epoch, 2).encode())
    caught_up = await gateway.attach(3, bearer("bob"), cursor=Cursor(epoch, 5).encode())
    await gateway.until(lambda: behind.live and caught_up.live)
    await post(server, "m6")
    await gateway.until(lambda: behind.posted[-1:] == ["m6"] and caught_up.posted[-1:] == ["m6"])
    assert behind.events[0].subscribed.recovered is True
    assert behind.posted == ["m3", "m4", "m5", "m6"]
    assert behind.offsets == [3, 4, 5, 6]
    assert caught_up.events[0].subscribed.recovered is True
    assert caught_up.offsets == [6]
    assert watcher.offsets == [6]


async def test_a_cursor_of_another_epoch_is_not_recovered_and_nothing_replays(
    server: ServerHandle, gateway: Gateway
) -> None:
    for i in range(3):
        await post(server, f"m{i}")
    caller = await gateway.attach(1, bearer("alice"), cursor=Cursor("0123456789abcdef", 1).encode())
    await gateway.until(lambda: caller.live)
    await post(server, "live")
    await gateway.until(lambda: caller.posted == ["live"])
    head = caller.events[0].subscribed
    assert (head.recovered, head.offset) == (False, 3)
    assert caller.offsets == [4]


async def test_a_cursor_beyond_history_is_not_recovered_and_nothing_replays(
    auth: AuthConfig,
) -> None:
    async with running_server(ServiceConfig(history_max_events=3), auth=auth) as server:
        room = await lobby(server)
        for i in range(6):
            await post(server, f"m{i}")
        gateway = Gateway(server)
        await gateway.open()
        caller = await gateway.attach(1, bearer("alice"), cursor=Cursor(room.epoch, 1).encode())
        await gateway.until(lambda: caller.live)
        await post(server, "live")
        await gateway.until(lambda: caller.posted == ["live"])
        await gateway.close()
    head = caller.events[0].subscribed
    assert (head.recovered, head.offset) == (False, 6)
    assert caller.offsets == [7]


@pytest.mark.parametrize(
    ("cursor", "code"),
    [
        ("not-a-cursor", grpc.StatusCode.INVALID_ARGUMENT),
        ("ahead", grpc.StatusCode.OUT_OF_RANGE),
    ],
)
async def test_a_bad_cursor_ends_only_that_handle_as_subscribe_would(
    server: ServerHandle, gateway: Gateway, cursor: str, code: grpc.StatusCode
) -> None:
    message = await post(server, "m1")
    if cursor == "ahead":
        cursor = Cursor(message.epoch, 9).encode()
    other = await gateway.attach(1, bearer("bob"))
    bad = await gateway.attach(2, bearer("alice"), cursor=cursor)
    await gateway.until(lambda: bad.end is not None and other.live)
    assert bad.end == await subscribe_error(server, bearer("alice"), cursor)
    assert bad.end is not None
    assert bad.end.code == code.value[0]
    assert bad.events == []
    violations = [
        v.field
        for detail in bad.end.details
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        for v in _unpacked(detail).field_violations
    ]
    assert violations == ["cursor"]
    await post(server, "m2")
    await gateway.until(lambda: other.posted == ["m2"])
    assert "alice" not in await members(server)


def _unpacked(detail: object) -> error_details_pb2.BadRequest:
    message = error_details_pb2.BadRequest()
    detail.Unpack(message)  # type: ignore[attr-defined]  # a google.protobuf.Any
    return message


async def test_an_attach_naming_another_room_ends_that_handle(gateway: Gateway) -> None:
    caller = await gateway.attach(1, bearer("alice"), room="rooms/elsewhere")
    await gateway.until(lambda: caller.end is not None)
    assert caller.end is not None
    assert caller.end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "rooms/lobby" in caller.end.message


# --- presence -------------------------------------------------------------------------------


async def test_presence_counts_each_user_once_across_handles_and_private_streams(
    server: ServerHandle, gateway: Gateway
) -> None:
    watcher = await gateway.attach(1, bearer("wendy"))
    await gateway.until(lambda: watcher.live)
    await gateway.attach(2, bearer("alice"))
    await gateway.attach(3, bearer("alice"))
    private = server.chat.Subscribe(
        chat_pb2.SubscribeRequest(room="rooms/lobby"), metadata=bearer("alice")
    )
    await within(private.read())
    await gateway.until(lambda: watcher.saw("member_joined", "alice"))
    assert await members(server) == {"wendy": 1, "alice": 3}
    joined = [e for e in watcher.events if e.HasField("member_joined")]
    assert [e.member_joined.user for e in joined].count("alice") == 1

    await gateway.detach(2)
    private.cancel()
    await eventually(lambda: _members_are(server, {"wendy": 1, "alice": 1}))
    assert not watcher.saw("member_left", "alice")
    await gateway.detach(3)
    await gateway.until(lambda: watcher.saw("member_left", "alice"))
    assert await members(server) == {"wendy": 1}


async def _members_are(server: ServerHandle, expected: dict[str, int]) -> bool:
    return await members(server) == expected


async def test_ending_the_share_call_releases_every_handle(
    server: ServerHandle, gateway: Gateway
) -> None:
    for handle, user in enumerate(("alice", "bob", "bob")):
        await gateway.attach(handle, bearer(user))
    await gateway.until(lambda: all(c.live for c in gateway.callers.values()))
    assert await members(server) == {"alice": 1, "bob": 2}
    await gateway.close()
    await eventually(lambda: _no_members(server))


async def test_half_closing_ends_the_call_ok_and_releases_presence(
    server: ServerHandle, gateway: Gateway
) -> None:
    caller = await gateway.attach(1, bearer("alice"))
    await gateway.until(lambda: caller.live)
    await within(gateway.call.done_writing())
    assert await gateway.ended() is None
    await eventually(lambda: _no_members(server))


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer garbage"),), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("mallory", "nobody"), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["no token", "bad token", "no permission"],
)
async def test_a_rejected_attach_ends_only_that_handle_as_subscribe_would(
    server: ServerHandle, gateway: Gateway, metadata: Metadata, code: grpc.StatusCode
) -> None:
    other = await gateway.attach(1, bearer("bob"))
    rejected = await gateway.attach(2, metadata)
    await gateway.until(lambda: rejected.end is not None and other.live)
    assert rejected.end == await subscribe_error(server, metadata, "")
    assert rejected.end is not None
    assert rejected.end.code == code.value[0]
    assert rejected.events == []
    await post(server, "m1")
    await gateway.until(lambda: other.posted == ["m1"])
    assert rejected.posted == []
    assert await members(server) == {"bob": 1}


async def test_a_share_call_with_no_handle_reads_nothing_of_the_room(
    server: ServerHandle, gateway: Gateway
) -> None:
    for i in range(3):
        await post(server, f"secret {i}")
    rejected = await gateway.attach(1, ())
    await gateway.until(lambda: rejected.end is not None)
    caller = await gateway.attach(2, bearer("alice"))
    await gateway.until(lambda: caller.live)
    await post(server, "after")
    await gateway.until(lambda: caller.posted == ["after"])
    sent = [
        chat_pb2.RoomEvent.FromString(r.message) for r in gateway.responses if r.HasField("message")
    ]
    assert [e.message_posted.text for e in sent if e.HasField("message_posted")] == ["after"]


async def test_a_handle_ends_when_its_token_expires_the_others_stay(
    server: ServerHandle, gateway: Gateway
) -> None:
    short = await gateway.attach(1, bearer("alice", ttl=2))
    lasting = await gateway.attach(2, bearer("bob"))
    await gateway.until(lambda: short.live and lasting.live)
    await gateway.until(lambda: short.end is not None)
    assert short.end == status_pb2.Status(
        code=grpc.StatusCode.UNAUTHENTICATED.value[0], message="token expired"
    )
    await post(server, "m1")
    await gateway.until(lambda: lasting.posted == ["m1"])
    assert short.posted == []
    assert await members(server) == {"bob": 1}


# --- the call itself ------------------------------------------------------------------------


async def _open_fails(
    server: ServerHandle, first: share_pb2.ShareRequest | None, code: grpc.StatusCode
) -> grpc.aio.AioRpcError:
    gateway = Gateway(server)
    if first is None:
        await within(gateway.call.done_writing())
    else:
        await gateway.send(first)
    error = await gateway.ended()
    assert error is not None
    assert error.code() == code, error.details()
    return error


def _open(
    method: str = SUBSCRIBE, room: str = "rooms/lobby", cursor: str = ""
) -> share_pb2.ShareRequest:
    request = chat_pb2.SubscribeRequest(room=room, cursor=cursor).SerializeToString()
    return share_pb2.ShareRequest(open=share_pb2.ShareOpen(method=method, request=request))


def _fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    return [
        v.field
        for detail in status.details
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        for v in _unpacked(detail).field_violations
    ]


async def test_the_first_request_must_open(server: ServerHandle) -> None:
    await lobby(server)
    attach = share_pb2.ShareRequest(attach=share_pb2.ShareAttach(handle=1))
    for first in (attach, None):
        error = await _open_fails(server, first, grpc.StatusCode.INVALID_ARGUMENT)
        assert _fields(error) == ["open"]


async def test_only_subscribe_can_be_shared(server: ServerHandle) -> None:
    await lobby(server)
    error = await _open_fails(
        server, _open("/switchboard.v1.ChatService/Converse"), grpc.StatusCode.UNIMPLEMENTED
    )
    assert "open.method" in (error.details() or "")


async def test_the_open_request_carries_no_cursor(server: ServerHandle) -> None:
    room = await lobby(server)
    cursor = Cursor(room.epoch, 0).encode()
    error = await _open_fails(server, _open(cursor=cursor), grpc.StatusCode.INVALID_ARGUMENT)
    assert _fields(error) == ["open.request.cursor"]


async def test_opening_a_missing_room_is_not_found_as_subscribe_says(server: ServerHandle) -> None:
    error = await _open_fails(server, _open(room="rooms/lobby"), grpc.StatusCode.NOT_FOUND)
    assert rpc_status.from_call(error) == await subscribe_error(server, bearer("alice"), "")


async def test_deleting_the_room_ends_the_call_not_found(
    server: ServerHandle, gateway: Gateway
) -> None:
    caller = await gateway.attach(1, bearer("alice"))
    await gateway.until(lambda: caller.live)
    await within(
        server.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name="rooms/lobby"), metadata=ADMIN)
    )
    error = await gateway.ended()
    assert error is not None
    assert error.code() == grpc.StatusCode.NOT_FOUND
