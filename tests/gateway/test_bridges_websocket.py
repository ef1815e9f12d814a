"""WebSocket calls through a real gateway, with the `websockets` client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import orjson
import pytest
from google.rpc import status_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.typing import Origin, Subprotocol

from gateway.bridges.streaming import StreamSettings
from gateway.config import Settings
from services.testing import ServerHandle, running_server
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2
from tests.gateway.conftest import echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import everything_pb2
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway

JSON_PROTOCOL = Subprotocol("switchboard.grpc.json.v1")
PROTO_PROTOCOL = Subprotocol("switchboard.grpc.proto.v1")
ROOM = "rooms/lobby"
HALF_CLOSE = '{"halfClose": true}'


def message_frame(message: dict[str, Any]) -> str:
    return orjson.dumps({"message": message}).decode()


async def until_close(ws: ClientConnection) -> tuple[list[Any], Close]:
    """Every frame the server sends until it closes, and its close frame."""
    frames: list[Any] = []
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await ws.recv()
                frames.append(orjson.loads(data) if isinstance(data, str) else data)
    received = ws.protocol.close_rcvd
    assert received is not None, "the server dropped the connection without a close frame"
    return frames, received


async def next_frame(ws: ClientConnection, key: str) -> dict[str, Any]:
    """The next JSON frame whose result (or the frame itself) holds ``key``."""
    async with asyncio.timeout(5):
        while True:
            frame = orjson.loads(await ws.recv())
            if key in frame or key in frame.get("result", {}):
                return dict(frame)


@pytest.fixture
async def switchboard() -> AsyncIterator[ServerHandle]:
    async with running_server() as handle:
        await handle.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        yield handle


@pytest.fixture
async def sb_gateway(switchboard: ServerHandle) -> AsyncIterator[Gateway]:
    settings = Settings(backends={"*": (switchboard.address,)})
    async with running_gateway(settings) as gw:
        yield gw


@pytest.fixture
async def echo_gateway(echo: EchoServer) -> AsyncIterator[Gateway]:
    streams = StreamSettings(websocket_max_message=1024, allowed_origins=("https://app.example",))
    async with running_gateway(echo_settings(echo), streams) as gw:
        yield gw


async def connections(switchboard: ServerHandle) -> int:
    """How many live streams the room's members have open (presence, on the backend)."""
    reply = await switchboard.presence.ListMembers(presence_pb2.ListMembersRequest(parent=ROOM))
    return sum(member.connections for member in reply.members)


async def test_bidi_chat_between_two_clients(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    url = sb_gateway.ws_url(f"/v1/{ROOM}:converse")
    async with (
        connect(url, subprotocols=[JSON_PROTOCOL]) as alice,
        connect(url) as bob,
    ):
        assert alice.subprotocol == JSON_PROTOCOL
        assert bob.subprotocol is None  # no subprotocol offered: JSON frames, none echoed
        await bob.send(message_frame({}))  # the room comes from the path
        await alice.send(message_frame({}))
        await eventually(lambda: _equals(connections(switchboard), 2), within=5)
        post = {"post": {"message": {"text": "hi bob"}, "requestId": "a-1"}}
        await alice.send(message_frame(post))
        ack = await next_frame(alice, "ack")
        event = await next_frame(bob, "event")
        while "messagePosted" not in event["result"]["event"]:
            event = await next_frame(bob, "event")
    assert ack["result"]["ack"]["requestId"] == "a-1"
    assert event["result"]["event"]["messagePosted"]["text"] == "hi bob"
    assert event["result"]["event"]["room"] == ROOM


async def test_import_messages_with_half_close(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with connect(sb_gateway.ws_url(f"/v1/{ROOM}/messages:import")) as ws:
        for text in ("a", "b", "c"):
            await ws.send(message_frame({"message": {"text": text}}))
        await ws.send(HALF_CLOSE)
        frames, close = await until_close(ws)
    assert frames[0]["result"]["importedCount"] == "3"
    assert frames[1] == {"status": {"code": 0, "message": "", "details": []}}
    assert (close.code, len(frames)) == (1000, 2)
    history = await switchboard.chat.ListMessages(chat_pb2.ListMessagesRequest(parent=ROOM))
    assert sorted(message.text for message in history.messages) == ["a", "b", "c"]


async def test_closing_the_socket_cancels_the_upstream_call(
    sb_gateway: Gateway, switchboard: ServerHandle
) -> None:
    async with connect(sb_gateway.ws_url(f"/v1/{ROOM}:converse")) as ws:
        await ws.send(message_frame({}))
        await eventually(lambda: _equals(connections(switchboard), 1), within=5)
    await eventually(lambda: _equals(connections(switchboard), 0), within=1.0)


async def test_proto_subprotocol_carries_binary_frames(echo_gateway: Gateway) -> None:
    url = echo_gateway.ws_url("/v1/everything:chat?id=p1")
    sent = everything_pb2.Everything(string_value="binary", int64_value=7)
    async with connect(url, subprotocols=[PROTO_PROTOCOL]) as ws:
        assert ws.subprotocol == PROTO_PROTOCOL
        await ws.send(b"\x01" + sent.SerializeToString())
        await ws.send(b"\x02")
        frames, close = await until_close(ws)
    assert frames[0][0] == 0x01
    echoed = everything_pb2.Everything.FromString(frames[0][1:])
    assert (echoed.id, echoed.string_value, echoed.int64_value) == ("p1", "binary", 7)
    assert frames[1][0] == 0x03
    assert status_pb2.Status.FromString(frames[1][1:]).code == 0
    assert close.code == 1000


async def test_server_streaming_over_a_websocket(echo_gateway: Gateway) -> None:
    url = echo_gateway.ws_url("/v1/everything/s1:stream")
    async with connect(url, additional_headers={"Grpc-Metadata-echo-repeat": "3"}) as ws:
        await ws.send(message_frame({"stringValue": "again"}))
        frames, close = await until_close(ws)
    assert [frame["result"]["stringValue"] for frame in frames[:3]] == ["again"] * 3
    assert [frame["result"]["id"] for frame in frames[:3]] == ["s1"] * 3
    assert frames[3]["status"]["code"] == 0
    assert close.code == 1000


@pytest.mark.parametrize(
    ("code", "number", "close_code"),
    [
        ("UNAUTHENTICATED", 16, 1008),
        ("PERMISSION_DENIED", 7, 1008),
        ("INTERNAL", 13, 1011),
        ("NOT_FOUND", 5, 4005),
        ("FAILED_PRECONDITION", 9, 4009),
    ],
)
async def test_status_is_sent_then_mapped_to_the_close_code(
    echo_gateway: Gateway, code: str, number: int, close_code: int
) -> None:
    headers = {"Grpc-Metadata-echo-code": code, "Grpc-Metadata-echo-message": "nope"}
    async with connect(
        echo_gateway.ws_url("/v1/everything:chat"), additional_headers=headers
    ) as ws:
        frames, close = await until_close(ws)
    assert frames == [
        {"status": {"code": number, "message": "nope", "details": frames[0]["status"]["details"]}}
    ]
    assert frames[0]["status"]["details"][0]["reason"] == "ECHO"
    assert (close.code, close.reason) == (close_code, "nope")


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_an_oversize_message_gets_a_status_and_1009(
    echo_gateway: Gateway, compression: str | None
) -> None:
    url = echo_gateway.ws_url("/v1/everything:chat")
    async with connect(url, compression=compression) as ws:
        await ws.send(message_frame({"stringValue": "a" * 4096}))  # deflates far below 1 KiB
        frames, close = await until_close(ws)
    assert frames[0]["status"]["code"] == 8
    assert "1024 bytes" in frames[0]["status"]["message"]
    assert close.code == 1009


async def test_a_bad_frame_is_invalid_argument(echo_gateway: Gateway) -> None:
    async with connect(echo_gateway.ws_url("/v1/everything:chat")) as ws:
        await ws.send('{"mesage": {}}')
        frames, close = await until_close(ws)
    assert frames[-1]["status"]["code"] == 3
    assert "'mesage'" in frames[-1]["status"]["message"]
    assert close.code == 4003


async def test_a_message_after_half_close_is_invalid_argument(sb_gateway: Gateway) -> None:
    async with connect(sb_gateway.ws_url(f"/v1/{ROOM}:converse")) as ws:
        await ws.send(message_frame({}))
        await ws.send(HALF_CLOSE)  # Converse keeps streaming events after a half-close
        await ws.send(message_frame({"typing": {"active": True}}))
        frames, close = await until_close(ws)
    assert frames[-1]["status"]["code"] == 3
    assert "half-closed" in frames[-1]["status"]["message"]
    assert close.code == 4003


async def test_a_bearer_token_subprotocol_gets_json_frames_and_is_not_echoed(
    echo_gateway: Gateway,
) -> None:
    url = echo_gateway.ws_url("/v1/everything:chat")
    async with connect(url, subprotocols=[Subprotocol("bearer"), Subprotocol("t0ken")]) as ws:
        assert ws.subprotocol == "bearer"
        await ws.send(message_frame({"id": "b"}))
        assert orjson.loads(await ws.recv())["result"]["id"] == "b"


async def test_unknown_subprotocols_fail_the_handshake(echo_gateway: Gateway) -> None:
    url = echo_gateway.ws_url("/v1/everything:chat")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=[Subprotocol("graphql-ws")]):
            pass
    assert refused.value.response.status_code == 400
    status = orjson.loads(refused.value.response.body or b"{}")
    assert status["code"] == 3
    assert JSON_PROTOCOL in status["message"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(Origin("https://evil.example"), False), (Origin("https://app.example"), True), (None, True)],
)
async def test_origin_allowlist_is_checked_before_the_upgrade(
    echo_gateway: Gateway, origin: Origin | None, allowed: bool
) -> None:
    url = echo_gateway.ws_url("/v1/everything:chat")
    if not allowed:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=origin):
                pass
        assert refused.value.response.status_code == 403
        assert orjson.loads(refused.value.response.body or b"{}")["code"] == 7
        return
    async with connect(url, origin=origin) as ws:
        await ws.send(message_frame({"id": "ok"}))
        assert orjson.loads(await ws.recv())["result"]["id"] == "ok"


async def test_same_host_origin_is_allowed_without_an_allowlist(sb_gateway: Gateway) -> None:
    url = sb_gateway.ws_url(f"/v1/{ROOM}/messages:import")
    async with connect(url, origin=Origin(sb_gateway.base)) as ws:
        await ws.send(HALF_CLOSE)
        _, close = await until_close(ws)
    assert close.code == 1000
    with pytest.raises(InvalidStatus):
        async with connect(url, origin=Origin("http://elsewhere.example")):
            pass


async def test_shutdown_sends_unavailable_then_1012(sb_gateway: Gateway) -> None:
    async with connect(sb_gateway.ws_url(f"/v1/{ROOM}:converse")) as ws:
        await ws.send(message_frame({}))
        await eventually(lambda: len(sb_gateway.live) == 1, within=5)
        shutdown = asyncio.create_task(sb_gateway.shutdown())
        frames, close = await until_close(ws)
        await shutdown
    assert frames[-1]["status"]["code"] == 14
    assert close.code == 1012


async def test_bidi_over_plain_http_asks_for_an_upgrade(echo_gateway: Gateway) -> None:
    url = echo_gateway.url("/v1/everything:chat")
    async with echo_gateway.session.post(url, json={"id": "x"}) as response:
        assert response.status == 426
        assert response.headers["Upgrade"] == "websocket"
        assert (await response.json())["code"] == 9


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_the_gateway_pings_an_idle_socket(echo: EchoServer) -> None:
    streams = StreamSettings(websocket_heartbeat=0.2)
    async with running_gateway(echo_settings(echo), streams) as gw:
        url = gw.ws_url("/v1/everything:chat")
        async with gw.session.ws_connect(url, autoping=False) as ws:
            ping = await ws.receive(timeout=2)
            assert ping.type is aiohttp.WSMsgType.PING
            await ws.pong(ping.data)
            await ws.send_str(message_frame({"id": "still-here"}))
            reply = await ws.receive(timeout=2)
            while reply.type is aiohttp.WSMsgType.PING:
                reply = await ws.receive(timeout=2)
    assert orjson.loads(reply.data)["result"]["id"] == "still-here"
