"""Shared upstream streams: many SSE/NDJSON subscribers of a room, one Share call upstream.

The real Switchboard service (with its StreamShareService) behind a real gateway, real SSE and
NDJSON clients, real tokens where auth matters. A server interceptor counts the calls the
gateway opens, which proves the sharing: one ``Share`` call and no ``Subscribe`` for any number
of subscribers of one room; ``share=False`` (``--no-share``) gives one ``Subscribe`` each.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from google.protobuf import descriptor_pb2

from gateway.authconfig import AuthConfig
from gateway.bridges import CallContext
from gateway.bridges.share import SharedCall, StreamShares
from gateway.bridges.streaming import STREAM_SHARES, StreamSettings
from gateway.config import ConfigError, Settings, settings_from_args, settings_from_toml
from gateway.descriptors import DEFAULT_MODULES, from_modules, pool_from_files
from gateway.routes import RouteError, build_route_table
from gateway.upstream import Upstream
from services.config import ServiceConfig
from services.testing import ServerHandle, running_server
from switchboard.gateway.v1 import options_pb2
from switchboard.v1 import (
    chat_pb2,
    presence_pb2,
    rooms_pb2,
)
from tests.gateway.conftest import echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import DESCRIPTOR_SET
from tests.gateway.signing import deployment_config, token
from tests.gateway.sse_client import EPHEMERAL, EventReader, ServerSentEvent
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway

ROOM = "rooms/lobby"
SSE = {"Accept": "text/event-stream"}
SHARE = "/switchboard.gateway.v1.StreamShareService/Share"
SUBSCRIBE = "/switchboard.v1.ChatService/Subscribe"
STREAMS = StreamSettings(heartbeat=0.2, retry_ms=500)


class CallCounter(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in the stubs
    """Counts the calls a server receives, by method path."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        self.calls[details.method] += 1
        return await continuation(details)


class Stream(EventReader):
    """One SSE subscriber, read with the standards-following parser."""

    async def rest(self, seconds: float = 5.0) -> list[ServerSentEvent]:
        """Every event until the stream ends (ephemeral ones left out)."""
        return [event for event in await super().rest(seconds) if event.type not in EPHEMERAL]

    async def texts_until(self, last: str, seconds: float = 10.0) -> list[str]:
        """The texts of the posted messages up to and including the one saying ``last``."""
        texts: list[str] = []
        while not texts or texts[-1] != last:
            event = await self.next(seconds)
            assert event.type == "message_posted", event
            texts.append(text_of(event))
        return texts


def data(event: ServerSentEvent) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(event.data)
    return parsed


def text_of(event: ServerSentEvent) -> str:
    return str(data(event)["messagePosted"]["text"])


def offset_of(event: ServerSentEvent) -> int:
    return int(data(event).get("offset", 0))


@asynccontextmanager
async def switchboard_with(
    counter: CallCounter, *, auth: AuthConfig | None = None, **config: Any
) -> AsyncIterator[ServerHandle]:
    async with running_server(ServiceConfig(**config), interceptors=(counter,), auth=auth) as sb:
        yield sb


@pytest.fixture
def counter() -> CallCounter:
    return CallCounter()


@pytest.fixture
async def switchboard(counter: CallCounter) -> AsyncIterator[ServerHandle]:
    async with switchboard_with(counter) as handle:
        await handle.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        yield handle


@pytest.fixture
async def gw(switchboard: ServerHandle) -> AsyncIterator[Gateway]:
    async with running_gateway(Settings(backends={"*": (switchboard.address,)}), STREAMS) as gw:
        yield gw


async def post(switchboard: ServerHandle, text: str) -> chat_pb2.Message:
    message = chat_pb2.Message(text=text)
    return await switchboard.chat.PostMessage(
        chat_pb2.PostMessageRequest(parent=ROOM, message=message)
    )


async def subscribe(
    stack: AsyncExitStack,
    gw: Gateway,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Stream:
    """An SSE subscriber of the room, open until ``stack`` closes, past its first event."""
    url = gw.url(f"/v1/{ROOM}:subscribe")
    response = await stack.enter_async_context(
        gw.session.get(url, headers={**SSE, **(headers or {})})
    )
    assert response.status == status, await response.text()
    stream = Stream(response)
    if status == 200:
        assert (await stream.next()).type == "subscribed"
    return stream


def shares(gw: Gateway) -> int:
    """Share calls the gateway holds open."""
    return len(gw.runner.app[STREAM_SHARES])


def attached(gw: Gateway) -> int:
    """Subscribers attached to the gateway's Share calls."""
    return gw.runner.app[STREAM_SHARES].callers()


# --- fan-out ------------------------------------------------------------------------------------


async def test_forty_subscribers_share_one_call_and_get_every_message_once_in_order(
    gw: Gateway, switchboard: ServerHandle, counter: CallCounter
) -> None:
    async with AsyncExitStack() as stack:
        early = await asyncio.gather(*(subscribe(stack, gw) for _ in range(30)))
        texts = [f"m{n}" for n in range(30)]

        async def post_all(part: list[str]) -> None:
            for text in part:
                await post(switchboard, text)

        posting = asyncio.gather(*(post_all(texts[n::3]) for n in range(3)))  # three posters
        late = await asyncio.gather(*(subscribe(stack, gw) for _ in range(10)))  # mid-stream
        await posting
        await post(switchboard, "end")
        history = await switchboard.chat.ListMessages(
            chat_pb2.ListMessagesRequest(parent=ROOM, direction=chat_pb2.DIRECTION_FORWARD)
        )
        in_order = [message.text for message in history.messages]
        received = await asyncio.gather(*(stream.texts_until("end") for stream in early + late))
        assert attached(gw) == 40
    assert sorted(in_order) == sorted([*texts, "end"])
    for got in received[:30]:
        assert got == in_order  # every message, once, in the room's order
    for got in received[30:]:
        assert got == in_order[len(in_order) - len(got) :]  # a suffix: all since it joined
    assert counter.calls[SHARE] == 1
    assert counter.calls[SUBSCRIBE] == 0
    await eventually(lambda: shares(gw) == 0, within=10.0)  # the last one out closed it


async def test_ndjson_and_sse_subscribers_share_one_call(
    gw: Gateway, switchboard: ServerHandle, counter: CallCounter
) -> None:
    url = gw.url(f"/v1/{ROOM}:subscribe")
    async with AsyncExitStack() as stack:
        lines = []
        for _ in range(3):
            response = await stack.enter_async_context(gw.session.get(url))
            assert response.headers["Content-Type"] == "application/x-ndjson"
            assert "subscribed" in orjson.loads(await response.content.readline())["result"]
            lines.append(response)
        sse = await subscribe(stack, gw)
        await post(switchboard, "to both")
        for response in lines:
            line = orjson.loads(await asyncio.wait_for(response.content.readline(), 5))
            while "messagePosted" not in line["result"]:  # skip presence
                line = orjson.loads(await asyncio.wait_for(response.content.readline(), 5))
            assert line["result"]["messagePosted"]["text"] == "to both"
        assert await sse.texts_until("to both") == ["to both"]
    assert counter.calls[SHARE] == 1
    assert counter.calls[SUBSCRIBE] == 0


async def test_without_sharing_each_subscriber_has_its_own_call_and_sees_the_same_events(
    switchboard: ServerHandle, counter: CallCounter
) -> None:
    backends = {"*": (switchboard.address,)}
    unshared = dataclasses.replace(STREAMS, share=False)
    async with (
        running_gateway(Settings(backends=backends), STREAMS) as shared_gw,
        running_gateway(Settings(backends=backends), unshared) as private_gw,
        AsyncExitStack() as stack,
    ):
        shared = [await subscribe(stack, shared_gw) for _ in range(3)]
        private = [await subscribe(stack, private_gw) for _ in range(3)]
        for n in range(5):
            await post(switchboard, f"m{n}")
        events = [[await s.next() for _ in range(5)] for s in shared + private]
    assert counter.calls[SUBSCRIBE] == 3
    assert counter.calls[SHARE] == 1
    wire = [[(e.type, e.last_event_id, e.data) for e in got] for got in events]
    assert all(got == wire[0] for got in wire)
    assert [text_of(event) for event in events[0]] == [f"m{n}" for n in range(5)]


async def test_a_deadline_ends_only_its_own_shared_stream(
    gw: Gateway, switchboard: ServerHandle, counter: CallCounter
) -> None:
    async with AsyncExitStack() as stack:
        staying = await subscribe(stack, gw)
        timed = await subscribe(stack, gw, headers={"Grpc-Timeout": "300m"})
        rest = await timed.rest()
        await post(switchboard, "after the deadline")
        assert await staying.texts_until("after the deadline") == ["after the deadline"]
        assert attached(gw) == 1
    assert rest[-1].type == "error"
    assert data(rest[-1]) == {"code": 4, "message": "Deadline Exceeded", "details": []}
    assert counter.calls[SHARE] == 1


# --- resume ---------------------------------------------------------------------------------


async def test_last_event_id_resumes_through_the_shared_call(
    gw: Gateway, switchboard: ServerHandle, counter: CallCounter
) -> None:
    async with AsyncExitStack() as stack:
        steady = await subscribe(stack, gw)  # keeps the shared call open throughout
        async with AsyncExitStack() as first:
            leaving = await subscribe(first, gw)
            await post(switchboard, "seen")
            seen = await leaving.next()
        await post(switchboard, "missed-1")
        await post(switchboard, "missed-2")
        async with AsyncExitStack() as second:
            resuming, _ = await asyncio.gather(
                _subscribe_raw(second, gw, **{"Last-Event-ID": seen.last_event_id}),
                post(switchboard, "during"),  # published while the resume starts
            )
            subscribed = await resuming.next()
            await post(switchboard, "live")
            texts = await resuming.texts_until("live")
        steady_texts = await steady.texts_until("live")
    assert subscribed.type == "subscribed"
    assert data(subscribed)["subscribed"]["recovered"] is True
    assert texts == ["missed-1", "missed-2", "during", "live"]  # each once, in order
    assert steady_texts == ["seen", "missed-1", "missed-2", "during", "live"]
    assert counter.calls[SHARE] == 1
    assert counter.calls[SUBSCRIBE] == 0


async def _subscribe_raw(stack: AsyncExitStack, gw: Gateway, **headers: str) -> Stream:
    url = gw.url(f"/v1/{ROOM}:subscribe")
    response = await stack.enter_async_context(gw.session.get(url, headers={**SSE, **headers}))
    assert response.status == 200
    return Stream(response)


# --- auth and presence ----------------------------------------------------------------------


@asynccontextmanager
async def guarded(
    tmp_path: Path, counter: CallCounter, *, gateway_auth: bool = True
) -> AsyncIterator[tuple[ServerHandle, Gateway]]:
    """The service with auth on (its StreamShareService decides every attach) and a gateway
    with the same config (or none: then only the service checks tokens)."""
    config = deployment_config(tmp_path)
    async with switchboard_with(counter, auth=config) as service:
        await service.rooms.CreateRoom(
            rooms_pb2.CreateRoomRequest(room_id="lobby"), metadata=bearer("root", "admin")
        )
        settings = Settings(
            backends={"*": (service.address,)}, auth=config if gateway_auth else None
        )
        async with running_gateway(settings, STREAMS) as gw:
            yield service, gw


def bearer(user: str, role: str = "member", ttl: int = 300) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token(user, (role,), ttl=ttl)}"),)


def as_user(user: str, role: str = "member", ttl: int = 300) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, (role,), ttl=ttl)}"}


async def post_as(service: ServerHandle, text: str, user: str = "root") -> None:
    request = chat_pb2.PostMessageRequest(parent=ROOM, message=chat_pb2.Message(text=text))
    await service.chat.PostMessage(request, metadata=bearer(user))


async def members_of(service: ServerHandle) -> list[str]:
    request = presence_pb2.ListMembersRequest(parent=ROOM)
    reply = await service.presence.ListMembers(request, metadata=bearer("root", "admin"))
    return sorted(member.user for member in reply.members)


async def test_presence_follows_each_subscriber_of_a_shared_call(
    tmp_path: Path, counter: CallCounter
) -> None:
    async with guarded(tmp_path, counter) as (service, gw):
        async with AsyncExitStack() as stack:
            alice = await subscribe(stack, gw, headers=as_user("alice"))
            await subscribe(stack, gw, headers=as_user("alice"))  # a second tab
            async with AsyncExitStack() as bobs:
                bob = await subscribe(bobs, gw, headers=as_user("bob", "viewer"))
                assert await members_of(service) == ["alice", "bob"]
                await post_as(service, "hello bob")
                assert await bob.texts_until("hello bob") == ["hello bob"]
            await eventually(lambda: _members_are(service, ["alice"]), within=10.0)
            await post_as(service, "still here")
            assert await alice.texts_until("still here") == ["hello bob", "still here"]
            assert await members_of(service) == ["alice"]
        await eventually(lambda: _members_are(service, []), within=10.0)
    assert counter.calls[SHARE] == 1
    assert counter.calls[SUBSCRIBE] == 0


async def _members_are(service: ServerHandle, users: list[str]) -> bool:
    return await members_of(service) == users


async def test_an_expiring_token_ends_only_its_own_stream(
    tmp_path: Path, counter: CallCounter
) -> None:
    async with guarded(tmp_path, counter) as (service, gw), AsyncExitStack() as stack:
        staying = await subscribe(stack, gw, headers=as_user("bob"))
        expiring = await subscribe(stack, gw, headers=as_user("alice", ttl=2))
        rest = await expiring.rest(seconds=6.0)
        await post_as(service, "after alice left")
        assert await staying.texts_until("after alice left") == ["after alice left"]
        assert attached(gw) == 1
    assert rest[-1].type == "error"
    assert data(rest[-1]) == {"code": 16, "message": "token expired", "details": []}
    assert counter.calls[SHARE] == 1


async def test_refused_subscribers_do_not_disturb_the_shared_stream(
    tmp_path: Path, counter: CallCounter
) -> None:
    async with guarded(tmp_path, counter) as (service, gw), AsyncExitStack() as stack:
        reader = await subscribe(stack, gw, headers=as_user("bob"))
        await subscribe(
            stack, gw, status=403, headers=as_user("eve", "nobody")
        )  # the gateway refuses
        await subscribe(stack, gw, status=401)  # no token
        await post_as(service, "undisturbed")
        assert await reader.texts_until("undisturbed") == ["undisturbed"]
        assert attached(gw) == 1
    assert counter.calls[SHARE] == 1


async def test_the_backend_refuses_an_attach_and_the_others_go_on(
    tmp_path: Path, counter: CallCounter
) -> None:
    async with (
        guarded(tmp_path, counter, gateway_auth=False) as (service, gw),
        AsyncExitStack() as stack,
    ):
        reader = await subscribe(stack, gw, headers=as_user("bob"))
        url = gw.url(f"/v1/{ROOM}:subscribe")
        for headers, status in (({}, 401), (as_user("eve", "nobody"), 403)):
            async with gw.session.get(url, headers={**SSE, **headers}) as refused:
                assert refused.status == status  # the attach was refused upstream
                body = await refused.json()
            assert body["code"] == (16 if status == 401 else 7)
        await post_as(service, "undisturbed")
        assert await reader.texts_until("undisturbed") == ["undisturbed"]
        assert await members_of(service) == ["bob"]
    assert counter.calls[SHARE] == 1
    assert counter.calls[SUBSCRIBE] == 0


# --- failures -------------------------------------------------------------------------------


async def test_a_backend_restart_ends_every_stream_and_new_ones_reach_the_new_backend(
    counter: CallCounter,
) -> None:
    async with switchboard_with(counter) as first:
        await first.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        port = int(first.address.rpartition(":")[2])
        settings = Settings(backends={"*": (first.address,)})
        async with running_gateway(settings, STREAMS) as gw, AsyncExitStack() as stack:
            sse = [await subscribe(stack, gw) for _ in range(3)]
            url = gw.url(f"/v1/{ROOM}:subscribe")
            ndjson = await stack.enter_async_context(gw.session.get(url))
            assert "subscribed" in orjson.loads(await ndjson.content.readline())["result"]
            await first.shutdown()
            for stream in sse:
                rest = await stream.rest()
                assert rest[-1].type == "error"
                assert data(rest[-1])["code"] == 14  # UNAVAILABLE: EventSource reconnects
            lines = (await asyncio.wait_for(ndjson.read(), 5)).splitlines()
            assert orjson.loads(lines[-1])["error"]["code"] == 14
            await eventually(lambda: shares(gw) == 0, within=10.0)
            async with serving_at(port, counter) as second:
                await second.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
                again = await _reconnect(stack, gw)
                await post(second, "on the new backend")
                assert await again.texts_until("on the new backend") == ["on the new backend"]
    assert counter.calls[SHARE] >= 2  # one per backend (a retry may add more)


async def _reconnect(stack: AsyncExitStack, gw: Gateway) -> Stream:
    """Subscribe as EventSource would: retry while the gateway's channel reconnects."""
    url = gw.url(f"/v1/{ROOM}:subscribe")
    async with asyncio.timeout(15):
        while True:
            response = await gw.session.get(url, headers=SSE)
            if response.status == 200:
                stack.push_async_callback(_release, response)
                stream = Stream(response)
                assert (await stream.next()).type == "subscribed"
                return stream
            assert response.status == 503, await response.text()
            response.release()
            await asyncio.sleep(0.2)  # EventSource's retry delay


async def _release(response: aiohttp.ClientResponse) -> None:
    response.release()


@asynccontextmanager
async def serving_at(port: int, counter: CallCounter) -> AsyncIterator[ServerHandle]:
    """A new Switchboard service on ``port``: the restarted backend."""
    async with running_server(interceptors=(counter,), port=port) as handle:
        yield handle


async def _ndjson_texts(response: aiohttp.ClientResponse, last: str) -> list[str]:
    """The texts of the posted messages on an NDJSON stream, up to the one saying ``last``."""
    texts: list[str] = []
    while not texts or texts[-1] != last:
        line = orjson.loads(await response.content.readline())
        posted = line["result"].get("messagePosted")
        if posted is not None:
            texts.append(posted["text"])
    return texts


async def test_a_slow_reader_is_ended_and_the_others_go_on(counter: CallCounter) -> None:
    streams = dataclasses.replace(STREAMS, write_buffer_limit=64 * 1024)
    async with switchboard_with(counter, max_message_bytes=60_000) as service:
        await service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        settings = Settings(backends={"*": (service.address,)})
        async with running_gateway(settings, streams) as gw, AsyncExitStack() as stack:
            url = gw.url(f"/v1/{ROOM}:subscribe")
            slow, *fast = [
                await stack.enter_async_context(gw.session.get(url)) for _ in range(3)
            ]  # NDJSON; the slow one is never read while messages flow
            await eventually(lambda: attached(gw) == 3, within=10.0)
            readers = [asyncio.ensure_future(_ndjson_texts(r, "end")) for r in fast]
            big = "x" * 50_000
            count = 0
            while attached(gw) == 3:  # until the slow reader is cut off
                assert count < 2_000, "the slow reader was never ended"
                await post(service, f"{count}:{big}")
                count += 1
            await post(service, "end")
            async with asyncio.timeout(20):
                received = await asyncio.gather(*readers)
            assert len(gw.live) == 2
            lines = (await asyncio.wait_for(slow.read(), 10)).splitlines()
    for texts in received:
        assert [text.partition(":")[0] for text in texts] == [*map(str, range(count)), "end"]
    assert orjson.loads(lines[-1])["error"] == {
        "code": 8,
        "message": "the client reads too slowly",
        "details": [],
    }
    assert counter.calls[SHARE] == 1


async def test_a_caller_too_far_behind_the_shared_call_is_ended_and_detached(
    counter: CallCounter,
) -> None:
    """``share_max_buffered`` bounds what a caller may leave unread inside the gateway (here
    two callers attached straight to the app's StreamShares; one is never read)."""
    async with switchboard_with(counter) as service:
        await service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        upstream = await Upstream.connect({service.address: (service.address,)})
        try:
            table = build_route_table(
                from_modules(DEFAULT_MODULES), backend_of=lambda _: service.address
            )
            route = next(r for _, _, r in table.routes() if r.method.name == "Subscribe")
            shares = StreamShares(StreamSettings(share_max_buffered=3))

            def caller(user: str) -> SharedCall:
                ctx = CallContext(
                    request=None,  # type: ignore[arg-type]  # StreamShares reads no HTTP request
                    route=route,
                    bindings=(),
                    query=(),
                    upstream=upstream,
                    settings=Settings(),
                    metadata=(("x-user-id", user),),
                    timeout=None,
                    request_id=user,
                    send_trailers=False,
                )
                request = chat_pb2.SubscribeRequest(room=ROOM)
                return shares.call(ctx, request, lambda: pytest.fail("no private call"))

            reader, stuck = caller("reader"), caller("stuck")
            for call in (reader, stuck):
                assert (await _next_event(call)).WhichOneof("kind") == "subscribed"
            reading = asyncio.ensure_future(_texts_of(reader, 5))
            for n in range(5):
                await post(service, f"m{n}")
            texts = await asyncio.wait_for(reading, 5)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await _texts_of(stuck, 5)  # its queue was dropped: the error comes at once
            assert shares.callers() == 1
            reader.cancel()
            await shares.close()
        finally:
            await upstream.close()
    assert texts == [f"m{n}" for n in range(5)]
    assert ended.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ended.value.details() == "the client reads too slowly"
    assert counter.calls[SHARE] == 1


async def _next_event(call: SharedCall) -> chat_pb2.RoomEvent:
    raw = await asyncio.wait_for(call.read(), 5)
    assert isinstance(raw, bytes), raw
    return chat_pb2.RoomEvent.FromString(raw)


async def _texts_of(call: SharedCall, count: int) -> list[str]:
    """The texts of the next ``count`` messages posted, read straight from a SharedCall."""
    texts: list[str] = []
    while len(texts) < count:
        event = await _next_event(call)
        if event.WhichOneof("kind") == "message_posted":
            texts.append(event.message_posted.text)
    return texts


# --- a backend that cannot share ----------------------------------------------------------


def shareable_everything(tmp_path: Path) -> Path:
    """testing.v1 with the share option on StreamEverything (the echo backend has no
    StreamShareService)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if method.name == "StreamEverything":
                    method.options.Extensions[options_pb2.share].SetInParent()
    path = tmp_path / "shareable.binpb"
    path.write_bytes(files.SerializeToString())
    return path


async def test_a_backend_without_the_share_service_gets_private_calls(
    echo: EchoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = echo_settings(echo, descriptor_set=shareable_everything(tmp_path))
    url = "/v1/everything/e1:stream?stringValue=hi"
    headers = {"Grpc-Metadata-echo-repeat": "2"}
    caplog.set_level(logging.WARNING, logger="gateway.bridges.share")
    async with running_gateway(settings, STREAMS) as gw:

        async def read() -> list[str]:
            async with gw.session.get(gw.url(url), headers=headers) as response:
                assert response.status == 200, await response.text()
                body = await response.read()
            return [orjson.loads(line)["result"]["stringValue"] for line in body.splitlines()]

        first = await asyncio.gather(*(read() for _ in range(4)))  # attached, then fell back
        later = await asyncio.gather(*(read() for _ in range(2)))  # private from the start
        assert shares(gw) == 0
    assert first + later == [["hi", "hi"]] * 6
    streamed = [call for call in echo.calls if call.method.endswith("/StreamEverything")]
    assert len(streamed) == 6
    warnings = [r for r in caplog.records if r.name == "gateway.bridges.share"]
    assert len(warnings) == 1
    assert "does not share /testing.v1" in warnings[0].getMessage()


# --- settings and start-up checks -------------------------------------------------------------


def test_no_share_flag_and_toml_turn_sharing_off(tmp_path: Path) -> None:
    assert settings_from_args(["--backend", "127.0.0.1:1", "--no-auth"]).streams.share is True
    flagged = settings_from_args(["--backend", "127.0.0.1:1", "--no-auth", "--no-share"])
    assert flagged.streams.share is False
    config = tmp_path / "gateway.toml"
    config.write_text('[backends]\n"*" = ["127.0.0.1:1"]\n[streams]\nshare = false\n')
    assert settings_from_toml(config).streams.share is False
    config.write_text('[streams]\nshare = "no"\n')
    with pytest.raises(ConfigError, match="share must be true or false"):
        settings_from_toml(config)


def _table_with(edit: Callable[[descriptor_pb2.MethodDescriptorProto], None]) -> Any:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                edit(method)
    pool = pool_from_files(files.file)
    everything = pool.FindServiceByName("testing.v1.EverythingService")
    return build_route_table([everything], backend_of=lambda _: "b")


def test_start_up_decides_which_routes_share() -> None:
    def shareable(method: descriptor_pb2.MethodDescriptorProto) -> None:
        if method.name == "StreamEverything":
            method.options.Extensions[options_pb2.share].SetInParent()

    routes = {route.method.name: route for _, _, route in _table_with(shareable).routes()}
    assert routes["StreamEverything"].share is not None
    assert routes["GetEverything"].share is None

    def disabled(method: descriptor_pb2.MethodDescriptorProto) -> None:
        if method.name == "StreamEverything":
            method.options.Extensions[options_pb2.share].disabled = True

    routes = {route.method.name: route for _, _, route in _table_with(disabled).routes()}
    assert routes["StreamEverything"].share is None

    def on_unary(method: descriptor_pb2.MethodDescriptorProto) -> None:
        if method.name == "GetEverything":
            method.options.Extensions[options_pb2.share].SetInParent()

    with pytest.raises(RouteError, match="GetEverything: the share option is for server-stream"):
        _table_with(on_unary)

    def bad_resume(method: descriptor_pb2.MethodDescriptorProto) -> None:
        if method.name == "StreamEverything":
            method.options.Extensions[options_pb2.share].SetInParent()
            method.options.Extensions[options_pb2.sse].resume_field = "no_such_field"

    with pytest.raises(RouteError, match="resume_field 'no_such_field' is not a singular scalar"):
        _table_with(bad_resume)


def test_sse_options_naming_no_field_stop_the_gateway_at_start_up() -> None:
    """A typo in SseOptions is found when the route table is built, naming the method and the
    option, not as a 500 on the first subscriber's request."""

    def bad_id(method: descriptor_pb2.MethodDescriptorProto) -> None:
        if method.name == "StreamEverything":
            method.options.Extensions[options_pb2.sse].id_field = "no_such_id"

    with pytest.raises(RouteError, match=r"StreamEverything: SseOptions.id_field 'no_such_id'"):
        _table_with(bad_id)

    def good(method: descriptor_pb2.MethodDescriptorProto) -> None:
        if method.name == "StreamEverything":
            method.options.Extensions[options_pb2.sse].event_field = "kind"

    routes = {route.method.name: route for _, _, route in _table_with(good).routes()}
    assert routes["StreamEverything"].sse_mapping.event_name is not None


def test_subscribers_differing_only_in_their_cursor_share_a_request() -> None:
    services = from_modules(("switchboard.v1.chat_pb2",))
    table = build_route_table(services, backend_of=lambda _: "b")
    route = next(r for _, _, r in table.routes() if r.method.name == "Subscribe")
    assert route.share is not None
    fresh = chat_pb2.SubscribeRequest(room=ROOM)
    resuming = chat_pb2.SubscribeRequest(room=ROOM, cursor="abc-7")
    other = chat_pb2.SubscribeRequest(room="rooms/other", cursor="abc-7")
    own, shared = route.share.requests(resuming)
    assert chat_pb2.SubscribeRequest.FromString(own) == resuming
    assert shared == route.share.requests(fresh)[1] == fresh.SerializeToString()
    assert route.share.requests(other)[1] != shared
