"""Server-Sent Events through a real gateway, against the echo backend and Switchboard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import orjson
import pytest

from gateway.bridges.streaming import StreamSettings
from gateway.config import Settings
from services.config import ServiceConfig
from services.testing import ServerHandle, running_server
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2
from tests.gateway.conftest import echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.sse_client import EPHEMERAL, EventReader
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway

SSE = {"Accept": "text/event-stream"}
ROOM = "rooms/lobby"


@pytest.fixture
async def switchboard() -> AsyncIterator[ServerHandle]:
    async with running_server(ServiceConfig(history_max_events=3)) as handle:
        await handle.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        yield handle


@pytest.fixture
async def sb_gateway(switchboard: ServerHandle) -> AsyncIterator[Gateway]:
    settings = Settings(backends={"*": (switchboard.address,)})
    async with running_gateway(settings, StreamSettings(heartbeat=0.2, retry_ms=1500)) as gw:
        yield gw


@pytest.fixture
async def echo_gateway(echo: EchoServer) -> AsyncIterator[Gateway]:
    async with running_gateway(echo_settings(echo), StreamSettings(heartbeat=0.2)) as gw:
        yield gw


async def post(switchboard: ServerHandle, text: str) -> chat_pb2.Message:
    message = chat_pb2.Message(text=text)
    return await switchboard.chat.PostMessage(
        chat_pb2.PostMessageRequest(parent=ROOM, message=message)
    )


async def members(switchboard: ServerHandle) -> list[str]:
    reply = await switchboard.presence.ListMembers(presence_pb2.ListMembersRequest(parent=ROOM))
    return [member.user for member in reply.members]


def subscribe(gw: Gateway, **headers: str) -> aiohttp.client._RequestContextManager:
    return gw.session.get(gw.url(f"/v1/{ROOM}:subscribe"), headers={**SSE, **headers})


async def test_stream_starts_with_retry_and_carries_each_message(echo_gateway: Gateway) -> None:
    headers = {**SSE, "Grpc-Metadata-echo-repeat": "3"}
    url = echo_gateway.url("/v1/everything/e1:stream?stringValue=hi")
    async with echo_gateway.session.get(url, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        first = await response.content.readline()
        reader = EventReader(response)
        events = await reader.rest()
    assert first == b"retry: 3000\n"
    assert [event.type for event in events] == ["message"] * 3
    assert {orjson.loads(event.data)["stringValue"] for event in events} == {"hi"}


async def test_last_event_id_parameter_never_trips_the_unknown_parameter_check(
    echo_gateway: Gateway,
) -> None:
    url = echo_gateway.url("/v1/everything/e2:stream?last_event_id=7")
    async with echo_gateway.session.get(url, headers=SSE) as response:
        assert response.status == 200
        events = await EventReader(response).rest()
    assert orjson.loads(events[0].data)["id"] == "e2"
    async with echo_gateway.session.get(url) as response:  # NDJSON has no resume
        assert response.status == 400
        assert "last_event_id" in (await response.json())["message"]


async def test_failure_before_the_first_event_is_an_http_status(echo_gateway: Gateway) -> None:
    headers = {**SSE, "Grpc-Metadata-echo-code": "PERMISSION_DENIED"}
    url = echo_gateway.url("/v1/everything/e1:stream")
    async with echo_gateway.session.get(url, headers=headers) as response:
        assert response.status == 403
        body = await response.json()
    assert body["code"] == 7
    assert body["message"] == "echo error"


async def test_a_silent_stream_starts_after_one_heartbeat_and_stays_alive(
    echo_gateway: Gateway,
) -> None:
    headers = {**SSE, "Grpc-Metadata-echo-stall": "1"}
    started = time.monotonic()
    url = echo_gateway.url("/v1/everything/quiet:stream")
    async with echo_gateway.session.get(url, headers=headers) as response:
        assert response.status == 200
        waited = time.monotonic() - started
        reader = EventReader(response)
        async with asyncio.timeout(5):
            while len(reader.parser.comments) < 2:
                reader.parser.feed(await response.content.readany())
    assert 0.15 < waited < 1.5
    assert reader.parser.retry_ms == 3000


async def test_events_carry_ids_and_oneof_names(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with subscribe(sb_gateway) as response:
        reader = EventReader(response)
        subscribed = await reader.next()
        posted = await post(switchboard, "hello")
        event = await reader.next()
    assert subscribed.type == "subscribed"
    assert orjson.loads(subscribed.data)["subscribed"].get("recovered", False) is False
    assert reader.parser.retry_ms == 1500
    assert event.type == "message_posted"
    assert event.last_event_id == orjson.loads(event.data)["id"]
    assert orjson.loads(event.data)["messagePosted"]["name"] == posted.name


async def test_upstream_failure_mid_stream_is_an_error_event(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with subscribe(sb_gateway) as response:
        reader = EventReader(response)
        await reader.next()
        await switchboard.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name=ROOM))
        events = await reader.rest()
    assert events[-1].type == "error"
    status = orjson.loads(events[-1].data)
    assert status["code"] == 5  # NOT_FOUND: the room is gone
    assert status["message"]


async def test_resume_after_disconnect_delivers_exactly_the_missed_events(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with subscribe(sb_gateway) as response:
        reader = EventReader(response)
        await reader.next()
        await post(switchboard, "seen")
        seen = await reader.next()
    # Forced disconnect: the block closed the connection. These two are missed:
    await post(switchboard, "missed-1")
    await post(switchboard, "missed-2")
    async with subscribe(sb_gateway, **{"Last-Event-ID": seen.last_event_id}) as response:
        reader = EventReader(response)
        subscribed = await reader.next()
        replayed = [await reader.next(), await reader.next()]
        await post(switchboard, "live")
        live = await reader.next()
    assert orjson.loads(subscribed.data)["subscribed"]["recovered"] is True
    texts = [orjson.loads(e.data)["messagePosted"]["text"] for e in [*replayed, live]]
    assert texts == ["missed-1", "missed-2", "live"]
    assert live.last_event_id != seen.last_event_id


async def test_last_event_id_query_parameter_resumes_and_the_header_wins(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with subscribe(sb_gateway) as response:
        reader = EventReader(response)
        await reader.next()
        await post(switchboard, "one")
        one = await reader.next()
    await post(switchboard, "two")
    url = sb_gateway.url(f"/v1/{ROOM}:subscribe?last_event_id={one.last_event_id}")
    async with sb_gateway.session.get(url, headers=SSE) as response:
        assert response.status == 200
        reader = EventReader(response)
        assert orjson.loads((await reader.next()).data)["subscribed"]["recovered"] is True
        assert orjson.loads((await reader.next()).data)["messagePosted"]["text"] == "two"
    url = sb_gateway.url(f"/v1/{ROOM}:subscribe?last_event_id=not-a-cursor")
    headers = {**SSE, "Last-Event-ID": one.last_event_id}
    async with sb_gateway.session.get(url, headers=headers) as response:
        assert response.status == 200
        reader = EventReader(response)
        assert orjson.loads((await reader.next()).data)["subscribed"]["recovered"] is True


@pytest.mark.parametrize("kind", ["evicted", "unknown epoch"])
async def test_resume_from_an_unusable_id_says_not_recovered_at_once(
    sb_gateway: Gateway, switchboard: ServerHandle, kind: str
) -> None:
    first = await post(switchboard, "first")
    for n in range(4):  # history keeps 3 events: "first" is evicted
        await post(switchboard, f"later-{n}")
    other_epoch = "0" * 16 if first.epoch != "0" * 16 else "1" * 16
    cursor = f"{first.epoch if kind == 'evicted' else other_epoch}-{first.offset}"
    async with subscribe(sb_gateway, **{"Last-Event-ID": cursor}) as response:
        assert response.status == 200
        event = await EventReader(response).next(seconds=2.0)
    assert event.type == "subscribed"
    assert orjson.loads(event.data)["subscribed"].get("recovered", False) is False


async def test_heartbeat_comments_keep_an_idle_stream_alive(sb_gateway: Gateway) -> None:
    async with subscribe(sb_gateway) as response:
        reader = EventReader(response)
        await reader.next()
        arrivals: list[float] = []
        start = time.monotonic()
        async with asyncio.timeout(5):
            while len(arrivals) < 3:
                reader.parser.feed(await response.content.readany())
                arrivals.extend(
                    time.monotonic() for _ in range(len(reader.parser.comments) - len(arrivals))
                )
    assert reader.parser.comments[:3] == ["heartbeat"] * 3
    gaps = [b - a for a, b in zip([start, *arrivals], arrivals, strict=False)]
    assert all(0.1 < gap < 1.0 for gap in gaps), gaps


async def test_client_going_away_cancels_the_upstream_call(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with subscribe(sb_gateway) as response:
        await EventReader(response).next()
        assert await members(switchboard) == ["anonymous"]
        connection = response.connection
        assert connection is not None
        assert connection.transport is not None
        connection.transport.abort()  # vanish mid-stream, without a FIN
    await eventually(lambda: _empty(members(switchboard)), within=1.0)
    assert len(sb_gateway.live) == 0


async def test_shutdown_ends_the_stream_so_eventsource_reconnects(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with subscribe(sb_gateway) as response:
        reader = EventReader(response)
        await reader.next()
        await post(switchboard, "before shutdown")
        last = await reader.next()
        shutdown = asyncio.create_task(sb_gateway.shutdown())
        rest = await reader.rest(seconds=3.0)
        await shutdown
    assert [event.type for event in rest if event.type not in EPHEMERAL] == []
    assert reader.parser.last_event_id == last.last_event_id
    # the subscriber leaves presence when the service handles the detach: soon, not at once
    await eventually(lambda: _empty(members(switchboard)), within=10.0)


async def _empty(users: Awaitable[list[str]]) -> bool:
    return not await users
