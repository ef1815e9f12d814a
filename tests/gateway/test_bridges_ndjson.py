"""NDJSON streams (server streaming) and uploads (client streaming) through a real gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from gateway.bridges.streaming import StreamSettings
from gateway.config import Settings
from services.testing import ServerHandle, running_server
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.gateway.conftest import echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway

ROOM = "rooms/lobby"
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def switchboard() -> AsyncIterator[ServerHandle]:
    async with running_server() as handle:
        await handle.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        yield handle


@pytest.fixture
async def sb_gateway(switchboard: ServerHandle) -> AsyncIterator[Gateway]:
    settings = Settings(backends={"*": (switchboard.address,)}, max_body_bytes=4096)
    async with running_gateway(settings) as gw:
        yield gw


@pytest.fixture
async def echo_gateway(echo: EchoServer) -> AsyncIterator[Gateway]:
    streams = StreamSettings(heartbeat=0.2, write_buffer_limit=64 * 1024)
    async with running_gateway(echo_settings(echo), streams) as gw:
        yield gw


async def test_each_message_is_one_result_line(echo_gateway: Gateway) -> None:
    url = echo_gateway.url("/v1/everything/n1:stream?stringValue=x")
    async with echo_gateway.session.get(
        url, headers={"Grpc-Metadata-echo-repeat": "3"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        lines = (await response.read()).splitlines()
    assert [orjson.loads(line)["result"]["id"] for line in lines] == ["n1"] * 3


async def test_failure_before_the_first_message_sets_the_http_status(echo_gateway: Gateway) -> None:
    url = echo_gateway.url("/v1/everything/n1:stream")
    headers = {"Grpc-Metadata-echo-code": "NOT_FOUND", "Grpc-Metadata-echo-message": "no n1"}
    async with echo_gateway.session.get(url, headers=headers) as response:
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("application/json")
        body = await response.json()
    assert (body["code"], body["message"]) == (5, "no n1")
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


async def test_failure_mid_stream_is_a_final_error_line(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with sb_gateway.session.get(sb_gateway.url(f"/v1/{ROOM}:subscribe")) as response:
        assert response.status == 200
        first = orjson.loads(await response.content.readline())
        await switchboard.rooms.DeleteRoom(rooms_pb2.DeleteRoomRequest(name=ROOM))
        rest = [orjson.loads(line) for line in (await response.read()).splitlines()]
    assert "subscribed" in first["result"]
    assert rest[-1]["error"]["code"] == 5
    assert all("result" in line for line in rest[:-1])


async def test_import_messages_from_an_ndjson_body(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    body = b'{"message": {"text": "a"}}\n\n{"message": {"text": "b"}, "requestId": "r2"}\r\n'
    body += b'{"message": {"text": "c"}}'
    url = sb_gateway.url(f"/v1/{ROOM}/messages:import")
    async with sb_gateway.session.post(url, data=body, headers=NDJSON) as response:
        assert response.status == 200
        reply = await response.json()
    assert reply["importedCount"] == "3"
    history = await switchboard.chat.ListMessages(
        chat_pb2.ListMessagesRequest(parent=ROOM, direction=chat_pb2.DIRECTION_FORWARD)
    )
    assert [message.text for message in history.messages] == ["a", "b", "c"]


async def test_a_bad_line_is_named_and_nothing_after_it_is_sent(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    body = b'{"message": {"text": "a"}}\n{"message": {"text": 5\n{"message": {"text": "c"}}\n'
    url = sb_gateway.url(f"/v1/{ROOM}/messages:import")
    async with sb_gateway.session.post(url, data=body, headers=NDJSON) as response:
        assert response.status == 400
        status = await response.json()
    assert status["code"] == 3
    assert status["message"].startswith("line 2:")
    history = await switchboard.chat.ListMessages(chat_pb2.ListMessagesRequest(parent=ROOM))
    assert "c" not in [message.text for message in history.messages]


async def test_an_oversize_line_is_refused(sb_gateway: Gateway) -> None:
    body = b'{"message": {"text": "a"}}\n{"message": {"text": "' + b"x" * 5000 + b'"}}\n'
    url = sb_gateway.url(f"/v1/{ROOM}/messages:import")
    async with sb_gateway.session.post(url, data=body, headers=NDJSON) as response:
        assert response.status == 413
        assert "line 2" in (await response.json())["message"]


async def test_other_content_types_are_refused(sb_gateway: Gateway) -> None:
    url = sb_gateway.url(f"/v1/{ROOM}/messages:import")
    headers = {"Content-Type": "text/csv"}
    async with sb_gateway.session.post(url, data=b"a,b", headers=headers) as response:
        assert response.status == 415
        assert "application/x-ndjson" in (await response.json())["message"]


async def test_upstream_failure_of_an_upload_is_its_status(sb_gateway: Gateway) -> None:
    url = sb_gateway.url("/v1/rooms/nowhere/messages:import")
    body = b'{"message": {"text": "a"}}\n'
    async with sb_gateway.session.post(url, data=body, headers=NDJSON) as response:
        assert response.status == 404
        assert (await response.json())["code"] == 5


async def test_a_slow_reader_is_ended_without_slowing_other_streams(
    echo_gateway: Gateway,
) -> None:
    big = "x" * 6000
    url = echo_gateway.url(f"/v1/everything/slow:stream?stringValue={big}")
    headers = {"Grpc-Metadata-echo-repeat": "100000"}
    async with echo_gateway.session.get(url, headers=headers) as slow:
        assert slow.status == 200  # and then never read while the gateway writes
        started = time.monotonic()
        fast_url = echo_gateway.url("/v1/everything/fast:stream")
        async with echo_gateway.session.get(fast_url) as fast:
            assert orjson.loads(await fast.read())["result"]["id"] == "fast"
        assert time.monotonic() - started < 2.0
        await eventually(lambda: len(echo_gateway.live) == 0, within=10)
        lines = (await slow.read()).splitlines()
    assert orjson.loads(lines[-1])["error"]["code"] == 8  # RESOURCE_EXHAUSTED
    assert 1 < len(lines) < 100000


async def test_shutdown_ends_the_stream_with_unavailable(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with sb_gateway.session.get(sb_gateway.url(f"/v1/{ROOM}:subscribe")) as response:
        await response.content.readline()
        shutdown = asyncio.create_task(sb_gateway.shutdown())
        rest = [orjson.loads(line) for line in (await response.read()).splitlines()]
        await shutdown
    assert rest[-1]["error"]["code"] == 14
