"""The gateway ends every stream at its token's ``exp``, whatever the backend does.

The echo backend never ends these streams on its own (a stalled server stream, a bidi chat
that answers every message and waits for more), so whatever ends them here is the gateway:
SSE with an ``event: error`` UNAUTHENTICATED "token expired", NDJSON with that error line,
WebSocket with that status frame and close 1008; the stream leaves the live-stream registry
(its upstream call is cancelled on the way out).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from google.protobuf import descriptor_pb2

from gateway.bridges.streaming import StreamSettings
from switchboard.gateway.v1 import options_pb2
from tests.gateway.conftest import echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import DESCRIPTOR_SET
from tests.gateway.signing import deployment_config, token
from tests.gateway.sse_client import SseParser
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway

EXPIRED = {"code": 16, "message": "token expired", "details": []}
STALL = {"Grpc-Metadata-Echo-Stall": "1"}
LATE = 1.0  # seconds past exp by which the stream must have ended


def readable_descriptor_set(tmp_path: Path) -> Path:
    """testing.v1 with every method requiring ``messages.read`` (a member has it)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                method.options.Extensions[options_pb2.auth].permissions.append("messages.read")
    path = tmp_path / "readable.binpb"
    path.write_bytes(files.SerializeToString())
    return path


@pytest.fixture
async def gateway(echo: EchoServer, tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = echo_settings(
        echo, descriptor_set=readable_descriptor_set(tmp_path), auth=deployment_config(tmp_path)
    )
    async with running_gateway(settings, StreamSettings(heartbeat=0.2)) as running:
        yield running


def short_lived(ttl: int = 2) -> tuple[dict[str, str], int]:
    """An Authorization header with a member's token expiring in (ttl-1, ttl] s, and its exp."""
    value = token("alice", ("member",), ttl=ttl)
    exp = int(jwt.decode(value, options={"verify_signature": False})["exp"])
    return {"Authorization": f"Bearer {value}"}, exp


def assert_ended_at(exp: int) -> None:
    now = time.time()
    assert exp - 0.05 <= now <= exp + LATE, f"ended {now - exp:+.2f} s from exp"


async def test_sse_ends_with_an_unauthenticated_error_event_at_exp(gateway: Gateway) -> None:
    auth, exp = short_lived()
    headers = {"Accept": "text/event-stream", **auth, **STALL}
    parser, events = SseParser(), []
    async with gateway.session.get(gateway.url("/v1/everything/s:stream"), headers=headers) as sse:
        assert sse.status == 200
        async with asyncio.timeout(exp - time.time() + 3):
            async for chunk in sse.content.iter_any():
                events.extend(parser.feed(chunk))
    assert_ended_at(exp)
    assert [event.type for event in events] == ["error"]
    assert json.loads(events[0].data) == EXPIRED
    await eventually(lambda: len(gateway.live) == 0, within=1)


async def test_ndjson_ends_with_an_unauthenticated_error_line_at_exp(gateway: Gateway) -> None:
    auth, exp = short_lived()
    url = gateway.url("/v1/everything/n:stream")
    async with gateway.session.get(url, headers={**auth, **STALL}) as response:
        assert response.status == 200
        async with asyncio.timeout(exp - time.time() + 3):
            body = await response.read()
    assert_ended_at(exp)
    assert [json.loads(line) for line in body.splitlines()] == [{"error": EXPIRED}]
    await eventually(lambda: len(gateway.live) == 0, within=1)


async def test_websocket_gets_an_unauthenticated_status_then_1008_at_exp(
    gateway: Gateway,
) -> None:
    auth, exp = short_lived()
    url = gateway.ws_url("/v1/everything:chat")
    async with gateway.session.ws_connect(url, headers=auth) as socket:
        await socket.send_json({"message": {"stringValue": "hello"}})
        first = await socket.receive_json(timeout=5)
        assert first["result"]["stringValue"] == "hello"
        async with asyncio.timeout(exp - time.time() + 3):
            frames = [json.loads(message.data) async for message in socket]
    assert_ended_at(exp)
    assert frames == [{"status": EXPIRED}]
    assert socket.close_code == 1008
    await eventually(lambda: len(gateway.live) == 0, within=1)


async def test_a_stream_whose_token_expired_within_the_leeway_is_refused_401(
    gateway: Gateway,
) -> None:
    """Admission allows clock-skew leeway; streams end at exp without it, so this one never
    starts: a 401 before the headers (EventSource gives up instead of reconnecting)."""
    auth, _ = short_lived(ttl=-1)
    headers = {"Accept": "text/event-stream", **auth, **STALL}
    async with gateway.session.get(gateway.url("/v1/everything/s:stream"), headers=headers) as sse:
        assert sse.status == 401
        assert sse.headers["WWW-Authenticate"] == (
            'Bearer error="invalid_token", error_description="token expired"'
        )
        assert await sse.json() == EXPIRED


async def test_an_upload_still_running_at_exp_is_cut_off_with_401(gateway: Gateway) -> None:
    auth, exp = short_lived()
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"stringValue": "one"}\n'
        sent.set()
        await asyncio.sleep(30)  # the rest of the upload never comes

    headers = {"Content-Type": "application/x-ndjson", **auth}
    url = gateway.url("/v1/everything:collect")
    async with gateway.session.post(url, data=body(), headers=headers) as response:
        assert_ended_at(exp)
        assert sent.is_set()
        assert response.status == 401
        assert await response.json() == EXPIRED


async def test_a_long_lived_token_keeps_the_stream_open(gateway: Gateway) -> None:
    auth, _ = short_lived(ttl=300)
    url = gateway.ws_url("/v1/everything:chat")
    async with gateway.session.ws_connect(url, headers=auth) as socket:
        for text in ("a", "b"):
            await socket.send_json({"message": {"stringValue": text}})
            reply = await socket.receive_json(timeout=5)
            assert reply["result"]["stringValue"] == text
        await socket.send_json({"halfClose": True})
        last = await socket.receive(timeout=5)
    assert last.type is aiohttp.WSMsgType.TEXT
    assert json.loads(last.data)["status"]["code"] == 0
