"""UnaryTunnelService: one Tunnel call carries many unary calls, each answered as a plain call of
the same request on the same server is answered — response, status, error details, header and
trailer metadata, identity, deadline — and one call failing fails only that call.

``Tunnel`` plays the gateway's side of a real Tunnel call with the generated stub: it sends
calls and cancels and collects every reply by id (one TunnelResponse may carry several).

Slow calls are real: ``stalling`` runs the server on the Redis engine, and ``writes_paused``
pauses the Redis server's writes (``CLIENT PAUSE … WRITE``). Every engine call runs a Lua
script, which Redis holds while writes are paused, so a call stays in flight exactly until the
test unpauses; calls that fail validation never reach Redis and answer at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import grpc
import pytest
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis.asyncio import Redis

from gateway.authconfig import AuthConfig
from services.config import ServiceConfig
from services.engine.redis import RedisEngine
from services.rooms import CREATED_METADATA
from services.testing import ServerHandle, running_server
from switchboard.gateway.v1 import share_pb2, tunnel_pb2, tunnel_pb2_grpc
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.gateway.signing import deployment_config, token
from tests.services.conftest import ServerFactory, fails, make_room, within
from tests.services.redis_server import fresh_prefix
from tests.services.test_auth_service import as_role, bearer

ROOMS = "/switchboard.v1.RoomService/"
CHAT = "/switchboard.v1.ChatService/"
DETAILS_KEY = "grpc-status-details-bin"
PAUSE_MS = 30_000  # a safety net: the test unpauses Redis itself, long before this
Metadata = Sequence[tuple[str, str]]
OK = grpc.StatusCode.OK
M = TypeVar("M", bound=ProtoMessage)
TunnelStream = grpc.aio.StreamStreamCall[tunnel_pb2.TunnelRequest, tunnel_pb2.TunnelResponse]


class Tunnel:
    """The gateway's side of one Tunnel call (see the module docstring)."""

    def __init__(self, server: ServerHandle) -> None:
        stub = tunnel_pb2_grpc.UnaryTunnelServiceStub(server.channel())
        # grpc-stubs types the aio call as needing a request iterator; it does not.
        self.call: TunnelStream = stub.Tunnel()  # type: ignore[call-arg]
        self.responses: list[tunnel_pb2.TunnelResponse] = []
        self.replies: defaultdict[int, list[tunnel_pb2.TunnelReply]] = defaultdict(list)
        self.error: grpc.aio.AioRpcError | None = None
        self.done = False
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def send(self, *calls: tunnel_pb2.TunnelCall, cancel: Sequence[int] = ()) -> None:
        await within(self.call.write(tunnel_pb2.TunnelRequest(calls=calls, cancel=cancel)))

    async def until(self, condition: Callable[[], bool]) -> None:
        """Waits until ``condition()`` holds after some response (fails if the call ended)."""

        async def wait() -> None:
            while not condition():
                assert not self.done, f"the Tunnel call ended: {self.error}"
                self._changed.clear()
                await self._changed.wait()

        await within(wait())

    async def reply(self, number: int) -> tunnel_pb2.TunnelReply:
        """The reply to call ``number`` (waits for it; fails if there are two)."""
        await self.until(lambda: number in self.replies)
        (only,) = self.replies[number]
        return only

    async def replies_to(self, *numbers: int) -> dict[int, tunnel_pb2.TunnelReply]:
        return {number: await self.reply(number) for number in numbers}

    def counts(self) -> dict[int, int]:
        return {number: len(replies) for number, replies in self.replies.items()}

    async def ended(self) -> grpc.aio.AioRpcError | None:
        """Waits for the call to end; its error (None when it ended OK)."""
        await within(asyncio.shield(self._reader))
        return self.error

    async def close(self) -> None:
        self.call.cancel()
        await within(asyncio.gather(self._reader, return_exceptions=True))

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.append(response)
                for reply in response.replies:
                    self.replies[reply.id].append(reply)
                self._changed.set()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
        finally:
            self.done = True
            self._changed.set()


@asynccontextmanager
async def tunnel_to(server: ServerHandle) -> AsyncIterator[Tunnel]:
    tunnel = Tunnel(server)
    try:
        yield tunnel
    finally:
        await tunnel.close()


def tunnel_call(
    number: int,
    method: str,
    request: ProtoMessage | bytes,
    metadata: Metadata = (),
    *,
    timeout: float | None = None,
) -> tunnel_pb2.TunnelCall:
    data = request if isinstance(request, bytes) else request.SerializeToString()
    entries = [share_pb2.ShareMetadata(key=key, value=value.encode()) for key, value in metadata]
    call = tunnel_pb2.TunnelCall(id=number, method=method, request=data, metadata=entries)
    if timeout is not None:
        call.timeout.FromNanoseconds(round(timeout * 1e9))
    return call


def post_request(text: str, parent: str = "rooms/lobby") -> chat_pb2.PostMessageRequest:
    return chat_pb2.PostMessageRequest(parent=parent, message=chat_pb2.Message(text=text))


def get_request(name: str = "rooms/lobby") -> rooms_pb2.GetRoomRequest:
    return rooms_pb2.GetRoomRequest(name=name)


def code_of(reply: tunnel_pb2.TunnelReply) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == reply.status.code)


def pairs(entries: Sequence[share_pb2.ShareMetadata]) -> list[tuple[str, bytes]]:
    return [(entry.key, entry.value) for entry in entries]


def status_of(reply: tunnel_pb2.TunnelReply) -> status_pb2.Status:
    """A failed reply's google.rpc.Status as ``rpc_status.from_call`` reads a plain call's: the
    details from ``grpc-status-details-bin`` (which must agree with the reply's status), or
    just the code and message when the call sent none."""
    assert reply.status.code != 0
    assert not reply.HasField("response")
    details = [entry.value for entry in reply.trailing_metadata if entry.key == DETAILS_KEY]
    if not details:
        return status_pb2.Status(code=reply.status.code, message=reply.status.message)
    (packed,) = details
    status = status_pb2.Status.FromString(packed)
    assert (status.code, status.message) == (reply.status.code, reply.status.message)
    return status


def plain_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """What a plain call ended with, as a google.rpc.Status (code and message without details)."""
    status: status_pb2.Status | None = rpc_status.from_call(cast("grpc.Call", error))
    if status is None:
        return status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return status


def violated_fields(status: status_pb2.Status) -> list[str]:
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [violation.field for violation in bad.field_violations]
    return fields


def response_of(reply: tunnel_pb2.TunnelReply, kind: type[M]) -> M:
    assert code_of(reply) == OK, reply.status.message
    assert reply.HasField("response")
    return kind.FromString(reply.response)


def cleared(message: M, *fields: str) -> M:
    """A copy of ``message`` without ``fields`` (the ones that differ from call to call)."""
    copy = type(message)()
    copy.CopyFrom(message)
    for name in fields:
        copy.ClearField(name)
    return copy


ROOM_VOLATILE = ("name", "create_time", "update_time", "etag", "epoch", "last_offset")
MESSAGE_VOLATILE = ("name", "text", "create_time", "update_time", "offset")


# --- many calls, one Tunnel call --------------------------------------------------------------


async def test_many_calls_in_one_request_each_get_one_reply_as_a_plain_call_would(
    server: ServerHandle,
) -> None:
    await make_room(server, "lobby")
    plain_post = await within(server.chat.PostMessage(post_request("plain")))
    annex = rooms_pb2.CreateRoomRequest(room_id="annex", room=rooms_pb2.Room(display_name="Annex"))
    posts = {
        10 + i: tunnel_call(10 + i, CHAT + "PostMessage", post_request(f"m{i}")) for i in range(20)
    }
    calls = [
        tunnel_call(1, ROOMS + "CreateRoom", annex),
        *posts.values(),
        tunnel_call(2, ROOMS + "GetRoom", get_request()),
    ]
    async with tunnel_to(server) as tunnel:
        await tunnel.send(*calls)
        await within(tunnel.call.done_writing())
        assert await tunnel.ended() is None
    assert tunnel.counts() == {call.id: 1 for call in calls}
    assert len(tunnel.responses) < len(calls), "replies ready together come back together"
    replies = {number: replies[0] for number, replies in tunnel.replies.items()}

    created = response_of(replies[1], rooms_pb2.Room)
    plain_created = await make_room(server, "plain-annex", display_name="Annex")
    assert created.name == "rooms/annex"
    assert cleared(created, *ROOM_VOLATILE) == cleared(plain_created, *ROOM_VOLATILE)

    posted = [response_of(replies[number], chat_pb2.Message) for number in posts]
    assert [message.text for message in posted] == [f"m{i}" for i in range(20)]
    assert sorted(message.offset for message in posted) == list(range(2, 22))
    for message in posted:
        assert cleared(message, *MESSAGE_VOLATILE) == cleared(plain_post, *MESSAGE_VOLATILE)
    history = await within(
        server.chat.ListMessages(
            chat_pb2.ListMessagesRequest(parent="rooms/lobby", direction=chat_pb2.DIRECTION_FORWARD)
        )
    )
    assert [m.text for m in history.messages] == ["plain"] + [f"m{i}" for i in range(20)]

    got = response_of(replies[2], rooms_pb2.Room)
    plain_got = await within(server.rooms.GetRoom(get_request()))
    volatile = ("update_time", "etag", "last_offset")
    assert cleared(got, *volatile) == cleared(plain_got, *volatile)


async def test_created_calls_send_the_201_header_as_a_plain_call_does(
    server: ServerHandle,
) -> None:
    await make_room(server, "lobby")
    plain_create = server.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="plain"))
    await within(plain_create)
    plain_post = server.chat.PostMessage(post_request("plain"))
    await within(plain_post)
    plain_get = server.rooms.GetRoom(get_request())
    await within(plain_get)
    header = [(key, str(value)) for key, value in CREATED_METADATA]
    for plain in (plain_create, plain_post):
        assert [p for p in await plain.initial_metadata() if p[0] == "x-http-code"] == header
    assert [p for p in await plain_get.initial_metadata() if p[0] == "x-http-code"] == []

    async with tunnel_to(server) as tunnel:
        await tunnel.send(
            tunnel_call(1, ROOMS + "CreateRoom", rooms_pb2.CreateRoomRequest(room_id="annex")),
            tunnel_call(2, CHAT + "PostMessage", post_request("tunnelled")),
            tunnel_call(3, ROOMS + "GetRoom", get_request()),
        )
        replies = await tunnel.replies_to(1, 2, 3)
    created = [(key, value.encode()) for key, value in header]
    assert pairs(replies[1].initial_metadata) == created
    assert pairs(replies[2].initial_metadata) == created
    assert pairs(replies[3].initial_metadata) == []
    assert all(code_of(reply) == OK for reply in replies.values())


# --- errors -----------------------------------------------------------------------------------


async def test_errors_carry_the_status_and_details_of_a_plain_call_and_fail_only_that_call(
    server: ServerHandle,
) -> None:
    await make_room(server, "lobby")
    missing, empty = get_request("rooms/missing"), post_request("")
    bad_parent = post_request("hi", parent="lobby")
    async with tunnel_to(server) as tunnel:
        await tunnel.send(
            tunnel_call(1, ROOMS + "GetRoom", missing),
            tunnel_call(2, CHAT + "PostMessage", empty),
            tunnel_call(3, CHAT + "PostMessage", bad_parent),
            tunnel_call(4, CHAT + "PostMessage", post_request("fine")),
            tunnel_call(5, ROOMS + "GetRoom", get_request()),
            tunnel_call(6, ROOMS + "GetRoom", b"\xff"),
        )
        replies = await tunnel.replies_to(1, 2, 3, 4, 5, 6)

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    plain = {
        1: await fails(server.rooms.GetRoom(missing), grpc.StatusCode.NOT_FOUND),
        2: await fails(server.chat.PostMessage(empty), invalid),
        3: await fails(server.chat.PostMessage(bad_parent), invalid),
    }
    for number, error in plain.items():
        assert code_of(replies[number]) == error.code()
        assert replies[number].status.message == error.details()
        assert status_of(replies[number]) == plain_status(error)
        assert len(status_of(replies[number]).details) == 1
    assert violated_fields(status_of(replies[2])) == ["message.text"]
    assert violated_fields(status_of(replies[3])) == ["parent"]

    fine = response_of(replies[4], chat_pb2.Message)
    assert fine.text == "fine"
    lobby = response_of(replies[5], rooms_pb2.Room)
    assert lobby.name == "rooms/lobby"
    assert code_of(replies[6]) == grpc.StatusCode.INTERNAL  # a request that does not parse
    assert "GetRoom" in replies[6].status.message


@pytest.mark.parametrize(
    "method",
    [
        "/switchboard.v1.RoomService/Nope",
        "/switchboard.v1.NoSuchService/GetRoom",
        "/switchboard.v1.ChatService/Subscribe",
        "/switchboard.v1.ChatService/Converse",
        "/switchboard.v1.ChatService/ImportMessages",
    ],
)
async def test_unknown_and_streaming_methods_are_unimplemented_for_that_call_only(
    server: ServerHandle, method: str
) -> None:
    await make_room(server, "lobby")
    async with tunnel_to(server) as tunnel:
        request = chat_pb2.SubscribeRequest(room="rooms/lobby")
        await tunnel.send(
            tunnel_call(1, method, request), tunnel_call(2, ROOMS + "GetRoom", get_request())
        )
        unimplemented, fine = (await tunnel.replies_to(1, 2)).values()
        assert code_of(unimplemented) == grpc.StatusCode.UNIMPLEMENTED
        assert method in unimplemented.status.message
        assert not unimplemented.HasField("response")
        assert code_of(fine) == OK
        await tunnel.send(tunnel_call(3, ROOMS + "GetRoom", get_request()))
        assert code_of(await tunnel.reply(3)) == OK


# --- auth: each call decided from its own metadata ----------------------------------------------


@pytest.fixture
def auth(tmp_path: Path) -> AuthConfig:
    return deployment_config(tmp_path)


@pytest.fixture
async def secured(auth: AuthConfig) -> AsyncIterator[ServerHandle]:
    async with running_server(auth=auth) as handle:
        await within(
            handle.rooms.CreateRoom(
                rooms_pb2.CreateRoomRequest(room_id="lobby"), metadata=as_role("root", "admin")
            )
        )
        yield handle


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("garbage"), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(token("alice", ("member",), ttl=-120)), grpc.StatusCode.UNAUTHENTICATED),
        (as_role("victor", "viewer"), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["no token", "bad token", "expired token", "no permission"],
)
async def test_a_rejected_call_gets_what_a_plain_call_gets_and_the_others_run(
    secured: ServerHandle, metadata: Metadata, code: grpc.StatusCode
) -> None:
    request = post_request("hi")
    plain = await fails(secured.chat.PostMessage(request, metadata=metadata), code)
    async with tunnel_to(secured) as tunnel:  # the Tunnel call itself carries no token
        await tunnel.send(
            tunnel_call(1, CHAT + "PostMessage", request, metadata),
            tunnel_call(2, CHAT + "PostMessage", post_request("ok"), as_role("alice", "member")),
        )
        rejected, accepted = (await tunnel.replies_to(1, 2)).values()
    assert code_of(rejected) == code
    assert rejected.status.message == plain.details()
    assert status_of(rejected) == plain_status(plain)
    message = response_of(accepted, chat_pb2.Message)
    assert message.sender == "alice"
    listed = await within(
        secured.chat.ListMessages(
            chat_pb2.ListMessagesRequest(parent="rooms/lobby"), metadata=as_role("root", "admin")
        )
    )
    assert [(m.text, m.sender) for m in listed.messages] == [("ok", "alice")]


async def test_each_call_runs_as_the_subject_of_its_own_token(secured: ServerHandle) -> None:
    alice, bob = as_role("alice", "member"), as_role("bob", "member")
    spoofed = (*bob, ("x-user-id", "mallory"), ("x-roles", "admin"))
    async with tunnel_to(secured) as tunnel:
        await tunnel.send(
            tunnel_call(1, CHAT + "PostMessage", post_request("from alice"), alice),
            tunnel_call(2, CHAT + "PostMessage", post_request("from bob"), spoofed),
            tunnel_call(
                3, ROOMS + "CreateRoom", rooms_pb2.CreateRoomRequest(room_id="annex"), alice
            ),
            tunnel_call(
                4, ROOMS + "DeleteRoom", rooms_pb2.DeleteRoomRequest(name="rooms/annex"), bob
            ),
        )
        replies = await tunnel.replies_to(1, 2, 3, 4)
    senders = [response_of(replies[n], chat_pb2.Message) for n in (1, 2)]
    assert [(m.text, m.sender) for m in senders] == [
        ("from alice", "alice"),
        ("from bob", "bob"),
    ]
    room = response_of(replies[3], rooms_pb2.Room)
    assert room.creator == "alice"
    assert code_of(replies[4]) == grpc.StatusCode.PERMISSION_DENIED  # a member deletes no room
    assert replies[4].status.message == "permission 'rooms.delete' required"


# --- slow calls: deadlines, cancel, half-close ----------------------------------------------------


@dataclass
class Stalling:
    """A server on the Redis engine whose Redis can be told to hold every write."""

    server: ServerHandle
    admin: Redis

    @asynccontextmanager
    async def writes_paused(self) -> AsyncIterator[None]:
        await within(self.admin.client_pause(PAUSE_MS, all=False))
        try:
            yield
        finally:
            await within(self.admin.client_unpause())


@pytest.fixture
async def stalling(redis_url: str, start_server: ServerFactory) -> AsyncIterator[Stalling]:
    engine = RedisEngine(redis_url, prefix=fresh_prefix())
    admin = Redis.from_url(redis_url)
    try:
        async with start_server(None, engine) as handle:
            await make_room(handle, "lobby")
            yield Stalling(handle, admin)
    finally:
        await admin.client_unpause()
        await admin.aclose()
        await engine.close()


async def test_a_call_slower_than_its_timeout_is_deadline_exceeded_alone(
    stalling: Stalling,
) -> None:
    server = stalling.server
    async with tunnel_to(server) as tunnel:
        async with stalling.writes_paused():
            plain = await fails(
                server.chat.PostMessage(post_request("plain"), timeout=0.5),
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            sent = time.monotonic()
            await tunnel.send(
                tunnel_call(1, CHAT + "PostMessage", post_request("late"), timeout=0.5),
                tunnel_call(2, CHAT + "PostMessage", post_request("patient"), timeout=60),
                tunnel_call(3, CHAT + "PostMessage", post_request("")),  # never reaches Redis
            )
            expired = await tunnel.reply(1)
            assert time.monotonic() - sent >= 0.5
            assert code_of(expired) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert expired.status.message == plain.details()
            assert code_of(await tunnel.reply(3)) == grpc.StatusCode.INVALID_ARGUMENT
            assert 2 not in tunnel.replies  # still held by Redis, within its own timeout
        patient = response_of(await tunnel.reply(2), chat_pb2.Message)
        assert patient.text == "patient"
        await tunnel.send(tunnel_call(4, ROOMS + "GetRoom", get_request(), timeout=60))
        assert code_of(await tunnel.reply(4)) == OK


async def test_an_already_expired_timeout_does_not_disturb_the_tunnel(server: ServerHandle) -> None:
    await make_room(server, "lobby")
    plain = await within(server.rooms.GetRoom(get_request()))
    async with tunnel_to(server) as tunnel:
        await tunnel.send(
            tunnel_call(1, ROOMS + "GetRoom", get_request(), timeout=1e-9),
            tunnel_call(2, CHAT + "PostMessage", post_request("hurry"), timeout=1e-9),
            tunnel_call(3, ROOMS + "GetRoom", get_request(), timeout=10),
        )
        replies = await tunnel.replies_to(1, 2, 3)
        for number in (1, 2):  # the handler may finish before its first await: either is right
            assert code_of(replies[number]) in (OK, grpc.StatusCode.DEADLINE_EXCEEDED)
        got = response_of(replies[3], rooms_pb2.Room)
        assert cleared(got, "last_offset") == cleared(plain, "last_offset")  # "hurry" may be in
        await tunnel.send(tunnel_call(4, CHAT + "PostMessage", post_request("after"), timeout=10))
        after = response_of(await tunnel.reply(4), chat_pb2.Message)
        assert after.text == "after"


async def test_a_cancelled_call_gets_no_reply_and_the_others_do(stalling: Stalling) -> None:
    async with tunnel_to(stalling.server) as tunnel:
        async with stalling.writes_paused():
            await tunnel.send(tunnel_call(1, CHAT + "PostMessage", post_request("abandoned")))
            await tunnel.send(tunnel_call(2, CHAT + "PostMessage", post_request("")), cancel=[1])
            assert code_of(await tunnel.reply(2)) == grpc.StatusCode.INVALID_ARGUMENT
        await tunnel.send(tunnel_call(3, ROOMS + "GetRoom", get_request()))
        assert code_of(await tunnel.reply(3)) == OK
        await within(tunnel.call.done_writing())
        assert await tunnel.ended() is None
    assert tunnel.counts() == {2: 1, 3: 1}


async def test_cancelling_a_finished_or_unknown_call_is_harmless(server: ServerHandle) -> None:
    await make_room(server, "lobby")
    async with tunnel_to(server) as tunnel:
        await tunnel.send(tunnel_call(1, ROOMS + "GetRoom", get_request()))
        assert code_of(await tunnel.reply(1)) == OK
        await tunnel.send(tunnel_call(2, CHAT + "PostMessage", post_request("hi")), cancel=[1, 99])
        assert code_of(await tunnel.reply(2)) == OK
        await tunnel.send(cancel=[2])
        await tunnel.send(tunnel_call(1, ROOMS + "GetRoom", get_request()))  # a finished id reused
        await tunnel.until(lambda: len(tunnel.replies[1]) == 2)
        assert code_of(tunnel.replies[1][1]) == OK
        await within(tunnel.call.done_writing())
        assert await tunnel.ended() is None
    assert tunnel.counts() == {1: 2, 2: 1}


async def test_half_closing_still_delivers_every_reply_then_ends_ok(stalling: Stalling) -> None:
    async with tunnel_to(stalling.server) as tunnel:
        async with stalling.writes_paused():
            await tunnel.send(
                tunnel_call(1, CHAT + "PostMessage", post_request("in flight")),
                tunnel_call(2, ROOMS + "GetRoom", get_request("lobby")),  # invalid: answered now
            )
            await within(tunnel.call.done_writing())
            assert code_of(await tunnel.reply(2)) == grpc.StatusCode.INVALID_ARGUMENT
            assert not tunnel.done  # call 1 is still running
        posted = response_of(await tunnel.reply(1), chat_pb2.Message)
        assert posted.text == "in flight"
        assert await tunnel.ended() is None
    assert tunnel.counts() == {1: 1, 2: 1}


async def test_shutdown_lets_a_running_call_finish_then_ends_the_tunnel_ok(
    stalling: Stalling,
) -> None:
    async with tunnel_to(stalling.server) as tunnel:
        async with stalling.writes_paused():
            await tunnel.send(tunnel_call(1, CHAT + "PostMessage", post_request("last words")))
            await asyncio.sleep(0.2)  # the call reaches the paused Redis (nothing to await on)
            started = time.monotonic()
            stopping = asyncio.ensure_future(stalling.server.shutdown(grace=20))
            await asyncio.sleep(0.2)
            assert not stopping.done()  # drain waits for the running call
            assert 1 not in tunnel.replies
        posted = response_of(await tunnel.reply(1), chat_pb2.Message)
        assert posted.text == "last words"  # not cut by the engine closing
        assert await tunnel.ended() is None  # the tunnel ended OK, not at the grace's end
        await within(stopping)
        assert time.monotonic() - started < 10
    assert tunnel.counts() == {1: 1}


async def test_an_id_already_in_flight_ends_the_tunnel_invalid_argument(
    stalling: Stalling,
) -> None:
    async with tunnel_to(stalling.server) as tunnel, stalling.writes_paused():
        await tunnel.send(tunnel_call(5, CHAT + "PostMessage", post_request("first")))
        await tunnel.send(tunnel_call(5, CHAT + "PostMessage", post_request("second")))
        error = await tunnel.ended()
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "calls.id: call 5 is already running in this tunnel"
    assert tunnel.counts() == {}


# --- responses over the server's send limit ----------------------------------------------------

SMALL = ServiceConfig(max_message_bytes=8 * 1024)  # a send limit of 8 KiB + 64 KiB
LIMIT = SMALL.max_receive_message_bytes


async def _room_of_big_messages(server: ServerHandle, count: int) -> None:
    await make_room(server, "lobby")
    for _ in range(count):
        await within(server.chat.PostMessage(post_request("x" * 8000)))


def list_request(page_size: int = 0) -> chat_pb2.ListMessagesRequest:
    return chat_pb2.ListMessagesRequest(parent="rooms/lobby", page_size=page_size)


async def test_a_response_over_the_send_limit_fails_that_call_alone(
    start_server: ServerFactory,
) -> None:
    async with start_server(SMALL) as server:
        await _room_of_big_messages(server, 10)  # a page of all ten is over the limit
        plain_page = await within(server.chat.ListMessages(list_request(2)))
        await fails(server.chat.ListMessages(list_request()), grpc.StatusCode.RESOURCE_EXHAUSTED)
        async with tunnel_to(server) as tunnel:
            await tunnel.send(
                tunnel_call(1, CHAT + "ListMessages", list_request()),
                tunnel_call(2, CHAT + "ListMessages", list_request(2)),
                tunnel_call(3, ROOMS + "GetRoom", get_request()),
            )
            replies = await tunnel.replies_to(1, 2, 3)
            assert code_of(replies[1]) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"over the limit of {LIMIT}" in replies[1].status.message
            assert response_of(replies[2], chat_pb2.ListMessagesResponse) == plain_page
            assert code_of(replies[3]) == OK
            await tunnel.send(tunnel_call(4, CHAT + "ListMessages", list_request(1)))
            assert code_of(await tunnel.reply(4)) == OK


async def test_replies_that_each_fit_the_send_limit_are_not_lost_by_batching(
    start_server: ServerFactory,
) -> None:
    async with start_server(SMALL) as server:
        await _room_of_big_messages(server, 6)  # a page of six fits; two of them together don't
        plain_page = await within(server.chat.ListMessages(list_request()))
        assert 2 * plain_page.ByteSize() > LIMIT > plain_page.ByteSize()
        async with tunnel_to(server) as tunnel:
            await tunnel.send(
                tunnel_call(1, CHAT + "ListMessages", list_request()),
                tunnel_call(2, CHAT + "ListMessages", list_request()),
            )
            replies = await tunnel.replies_to(1, 2)
            for reply in replies.values():
                assert response_of(reply, chat_pb2.ListMessagesResponse) == plain_page
            await tunnel.send(tunnel_call(3, ROOMS + "GetRoom", get_request()))
            assert code_of(await tunnel.reply(3)) == OK


async def test_a_response_just_under_the_send_limit_does_not_end_the_tunnel(
    start_server: ServerFactory,
) -> None:
    async with start_server(SMALL) as server:
        await _room_of_big_messages(server, 9)
        last = await within(server.chat.PostMessage(post_request("y")))
        target = LIMIT - 2  # a plain call carries a response of this size
        size = 0
        for _ in range(5):  # each edit grows the page by as many bytes as the text grows
            if size == target:
                break
            length = len(last.text) + target - size if size else 500
            edit = chat_pb2.Message(name=last.name, text="y" * length)
            last = await within(
                server.chat.UpdateMessage(chat_pb2.UpdateMessageRequest(message=edit))
            )
            size = (await within(server.chat.ListMessages(list_request()))).ByteSize()
        assert size == target
        plain_page = await within(server.chat.ListMessages(list_request()))
        async with tunnel_to(server) as tunnel:
            await tunnel.send(tunnel_call(1, CHAT + "ListMessages", list_request()))
            reply = await tunnel.reply(1)
            if code_of(reply) == OK:  # carried as a plain call carries it
                assert response_of(reply, chat_pb2.ListMessagesResponse) == plain_page
            else:  # or refused alone, the tunnel serving on
                assert code_of(reply) == grpc.StatusCode.RESOURCE_EXHAUSTED
            await tunnel.send(tunnel_call(2, ROOMS + "GetRoom", get_request()))
            assert code_of(await tunnel.reply(2)) == OK
