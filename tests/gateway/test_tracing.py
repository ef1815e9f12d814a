"""W3C trace context through the gateway, and the spans when tracing is on (gateway/telemetry.py).

Without tracing (the default) the gateway is a pass-through for a client's ``traceparent`` and
``tracestate``: the echo backend records the metadata every bridge sends (REST through the
tunnel and plain, SSE, NDJSON, client-streaming NDJSON, WebSocket), and it must be the client's,
unchanged, with no span recorded anywhere.

With tracing on (an SDK TracerProvider recording into an InMemorySpanExporter, installed while
the real gateway and the real Switchboard service are built: tests/services/test_tracing.py's
``recording``), one request from a client with a ``traceparent`` must give a gateway SERVER
span whose trace and parent are the client's, and a service span that is the gateway span's
child, whichever way the call went (tunnel, plain call, shared or private stream, WebSocket).
The last test runs ``python -m services`` and ``python -m gateway`` as processes with
``OTEL_TRACES_EXPORTER=console`` and reads the linked spans each prints.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import telemetry
from gateway.app import UPSTREAM
from gateway.bridges.streaming import StreamSettings
from gateway.config import Settings
from gateway.metadata import MetadataError, request_metadata
from services.testing import ServerHandle, running_server
from switchboard.v1 import rooms_pb2
from tests.gateway.conftest import SERVICES, echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.sse_client import EventReader
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway
from tests.gateway.tunnel_backend import running_tunnel_echo
from tests.services.test_tracing import ClientTrace, child_of, named, only, parent_of, recording

ROOT = Path(__file__).resolve().parents[2]
SSE = {"Accept": "text/event-stream"}
WITHIN = 10.0  # seconds: a bound for polled conditions and subprocess steps, not a speed check
POST_MESSAGE = "POST /v1/{parent=rooms/*}/messages"
SUBSCRIBE = "GET /v1/{room=rooms/*}:subscribe"


def headers_of(client: ClientTrace, **more: str) -> dict[str, str]:
    return {"traceparent": client.traceparent, "tracestate": "vendor=client", **more}


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def is_child(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert parent.context is not None
    return parent_of(span) == (parent.context.trace_id, parent.context.span_id)


# --- passthrough: always, tracing or not --------------------------------------------------------


def test_trace_headers_become_metadata_and_a_bad_value_is_dropped_not_refused() -> None:
    sent = [
        ("TraceParent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "a=1"),
        ("Tracestate", "b=2"),
        ("Content-Type", "application/json"),
    ]
    built = request_metadata(sent, peer=None, host=None, request_id="r")
    assert built[:3] == (
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "a=1"),
        ("tracestate", "b=2"),
    )
    dropped = request_metadata([("traceparent", "00-é")], peer=None, host=None, request_id="r")
    assert dropped == (("x-request-id", "r"),)
    # As Grpc-Metadata-* they are ordinary metadata, not reserved keys.
    explicit = request_metadata(
        [("Grpc-Metadata-Traceparent", "00-x")], peer=None, host=None, request_id="r"
    )
    assert explicit[0] == ("traceparent", "00-x")
    with pytest.raises(MetadataError):  # an explicit metadata header must be valid, as ever
        request_metadata([("Grpc-Metadata-Tracestate", "é")], peer=None, host=None, request_id="r")


def _carried(echo: EchoServer, method: str) -> tuple[object, object]:
    metadata = echo.last(method).metadata
    return metadata.get("traceparent"), metadata.get("tracestate")


async def test_trace_context_passes_through_every_bridge_without_tracing() -> None:
    assert telemetry.tracer("gateway") is None  # nothing configured: tracing is off
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # exists, but nobody installed it
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with (
        running_tunnel_echo(SERVICES) as echo,
        running_gateway(echo_settings(echo)) as tunnelled,
        running_gateway(echo_settings(echo, tunnel=False)) as plain,
    ):
        seen: dict[str, tuple[object, object]] = {}
        expected: dict[str, tuple[object, object]] = {}

        async def check(label: str, gw: Gateway, method: str, path: str, **kw: Any) -> None:
            client = ClientTrace.new()
            headers = headers_of(client, **kw.pop("headers", {}))
            async with gw.session.request(method, gw.url(path), headers=headers, **kw) as got:
                await got.read()
                assert got.status == 200, label
            expected[label] = (client.traceparent, "vendor=client")

        await check("tunnel", tunnelled, "GET", "/v1/everything/t1")
        seen["tunnel"] = _carried(echo, "GetEverything")
        tunnel = tunnelled.runner.app[UPSTREAM].tunnel(echo.address)
        assert tunnel is not None  # it went through the tunnel
        await eventually(lambda: tunnel.calls_sent == 1, within=WITHIN)
        await check("plain", plain, "GET", "/v1/everything/p1")
        seen["plain"] = _carried(echo, "GetEverything")
        await check("sse", plain, "GET", "/v1/everything/s1:stream", headers=SSE)
        seen["sse"] = _carried(echo, "StreamEverything")
        await check("ndjson", plain, "GET", "/v1/everything/n1:stream")
        seen["ndjson"] = _carried(echo, "StreamEverything")
        ndjson = {"Content-Type": "application/x-ndjson"}
        body = b'{"id": "c"}\n'
        await check("collect", plain, "POST", "/v1/everything:collect", data=body, headers=ndjson)
        seen["collect"] = _carried(echo, "CollectEverything")
        client = ClientTrace.new()
        url = plain.ws_url("/v1/everything:chat")
        async with plain.session.ws_connect(url, headers=headers_of(client)) as ws:
            await ws.send_str(orjson.dumps({"message": {"id": "w"}}).decode())
            frame = await asyncio.wait_for(ws.receive_json(), WITHIN)
            assert frame["result"]["id"] == "w"
        seen["websocket"] = _carried(echo, "ChatEverything")
        expected["websocket"] = (client.traceparent, "vendor=client")
    assert seen == expected
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


# --- spans: a traced gateway in front of a traced service ----------------------------------------


@dataclass
class Traced:
    spans: InMemorySpanExporter
    service: ServerHandle
    gateway: Gateway


@asynccontextmanager
async def traced(
    *, tunnel: bool = True, streams: StreamSettings | None = None
) -> AsyncIterator[Traced]:
    """Tracing on, a Switchboard service with room ``lobby`` and a gateway in front of it."""
    with recording() as spans:
        async with running_server() as service:
            await service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
            settings = Settings(backends={"*": (service.address,)}, tunnel=tunnel)
            async with running_gateway(settings, streams) as gateway:
                yield Traced(spans, service, gateway)


@pytest.mark.parametrize("tunnel", [True, False], ids=["tunnel", "no-tunnel"])
async def test_a_rest_call_continues_the_clients_trace_into_the_service(tunnel: bool) -> None:
    client = ClientTrace.new()
    async with traced(tunnel=tunnel) as sb:
        gw = sb.gateway
        url = gw.url("/v1/rooms/lobby/messages")
        async with gw.session.post(url, json={"text": "hi"}, headers=headers_of(client)) as got:
            assert got.status == 201, await got.text()
        tunnel_used = gw.runner.app[UPSTREAM].tunnel(sb.service.address)
        if tunnel:  # the tunnel carried it
            assert tunnel_used is not None
            await eventually(lambda: tunnel_used.calls_sent == 1, within=WITHIN)
        else:
            assert tunnel_used is None
    front = only(sb.spans, POST_MESSAGE)
    assert front.kind is SpanKind.SERVER
    assert child_of(front, client)
    assert attributes(front) == {
        "http.request.method": "POST",
        "http.route": "/v1/{parent=rooms/*}/messages",
        "http.response.status_code": 201,
        "url.path": "/v1/rooms/lobby/messages",
        "url.scheme": "http",
        "rpc.system": "grpc",
        "rpc.service": "switchboard.v1.ChatService",
        "rpc.method": "PostMessage",
    }
    behind = only(sb.spans, "switchboard.v1.ChatService/PostMessage")
    assert behind.kind is SpanKind.SERVER
    assert is_child(behind, front)
    assert behind.context is not None
    assert behind.context.trace_state.get("vendor") == "client"  # tracestate carried on
    assert attributes(behind)["rpc.grpc.status_code"] == 0
    assert named(sb.spans, "switchboard.gateway.v1.UnaryTunnelService/Tunnel") == []


async def test_errors_record_the_grpc_code_and_the_http_status() -> None:
    client, lost, probe = ClientTrace.new(), ClientTrace.new(), ClientTrace.new()
    async with traced() as sb:
        gw = sb.gateway
        async with gw.session.get(gw.url("/v1/rooms/nope"), headers=headers_of(client)) as got:
            assert got.status == 404
        async with gw.session.get(gw.url("/nowhere"), headers=headers_of(lost)) as got:
            assert got.status == 404
        async with gw.session.get(gw.url("/healthz"), headers=headers_of(probe)) as got:
            assert got.status == 200
    front = only(sb.spans, "GET /v1/{name=rooms/*}")
    assert child_of(front, client)
    assert attributes(front)["http.response.status_code"] == 404
    assert attributes(front)["rpc.grpc.status_code"] == 5
    assert front.status.status_code is StatusCode.UNSET  # a 4xx is the client's, not an error
    behind = only(sb.spans, "switchboard.v1.RoomService/GetRoom")
    assert is_child(behind, front)
    assert attributes(behind)["rpc.grpc.status_code"] == 5
    unrouted = only(sb.spans, "GET")
    assert child_of(unrouted, lost)
    assert "http.route" not in attributes(unrouted)
    assert attributes(unrouted)["http.response.status_code"] == 404
    assert attributes(unrouted)["rpc.grpc.status_code"] == 5
    health = only(sb.spans, "GET /healthz")
    assert child_of(health, probe)
    assert attributes(health)["http.route"] == "/healthz"


def in_trace(spans: InMemorySpanExporter, name: str, client: ClientTrace) -> list[ReadableSpan]:
    """The ended spans named ``name`` of ``client``'s trace."""
    return [
        span
        for span in named(spans, name)
        if span.context is not None and span.context.trace_id == client.trace_id
    ]


@pytest.mark.parametrize("share", [True, False], ids=["shared", "private"])
async def test_an_sse_subscription_and_its_service_span_are_linked(share: bool) -> None:
    """Shared: the service's span is the attach's (no Share span); private: the Subscribe
    call's. Either is the gateway span's child and ends when the subscriber leaves. Another
    subscriber stays throughout, so the shared call outlives the traced one's attach."""
    client = ClientTrace.new()
    subscribe = "switchboard.v1.ChatService/Subscribe"
    async with traced(streams=StreamSettings(share=share, heartbeat=0.2)) as sb:
        gw = sb.gateway
        url = gw.url("/v1/rooms/lobby:subscribe")
        async with gw.session.get(url, headers=SSE) as steady:
            assert (await EventReader(steady).next(WITHIN)).type == "subscribed"
            async with gw.session.get(url, headers=headers_of(client, **SSE)) as response:
                assert response.status == 200
                assert (await EventReader(response).next(WITHIN)).type == "subscribed"
                assert in_trace(sb.spans, SUBSCRIBE, client) == []  # the stream is still open

            def both_ended() -> bool:
                ended = (in_trace(sb.spans, name, client) for name in (SUBSCRIBE, subscribe))
                return all(ended)

            await eventually(both_ended, within=WITHIN)
    [front] = in_trace(sb.spans, SUBSCRIBE, client)
    assert child_of(front, client)
    assert attributes(front)["http.response.status_code"] == 200
    [behind] = in_trace(sb.spans, subscribe, client)
    assert is_child(behind, front)
    # shared: the gateway detached the handle (OK); private: it cancelled the call (CANCELLED)
    assert attributes(behind)["rpc.grpc.status_code"] == (0 if share else 1)
    assert named(sb.spans, "switchboard.gateway.v1.StreamShareService/Share") == []


async def test_a_websocket_stream_and_its_service_span_are_linked() -> None:
    client = ClientTrace.new()
    async with traced() as sb:
        gw = sb.gateway
        url = gw.ws_url("/v1/rooms/lobby:subscribe")
        async with gw.session.ws_connect(url, headers=headers_of(client)) as ws:
            await ws.send_str(orjson.dumps({"message": {}}).decode())
            frame = await asyncio.wait_for(ws.receive_json(), WITHIN)
            assert "subscribed" in frame["result"]

        def both_ended() -> bool:
            return bool(named(sb.spans, SUBSCRIBE)) and bool(
                named(sb.spans, "switchboard.v1.ChatService/Subscribe")
            )

        await eventually(both_ended, within=WITHIN)
    front = only(sb.spans, SUBSCRIBE)
    assert child_of(front, client)
    assert attributes(front)["http.response.status_code"] == 101
    assert is_child(only(sb.spans, "switchboard.v1.ChatService/Subscribe"), front)


# --- the processes, as an operator runs them ---------------------------------------------------


def _env(**otel: str) -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "clients" / "python"), os.environ.get("PYTHONPATH", "")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **otel}


async def _start(module: str, *args: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _line(stream: asyncio.StreamReader | None, pattern: str) -> re.Match[str]:
    assert stream is not None
    while line := (await asyncio.wait_for(stream.readline(), WITHIN * 3)).decode():
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"the process ended without printing {pattern!r}")


def _printed_spans(text: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporter printed, among the process's other lines."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while (start := text.find("{", index)) != -1:
        document, index = decoder.raw_decode(text, start)
        spans.append(document)
    return spans


async def _stopped(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then what the process printed on stdout (its exit status must be 0)."""
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), WITHIN * 3)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_both_processes_print_linked_spans_with_the_console_exporter() -> None:
    client = ClientTrace.new()
    env = _env(OTEL_TRACES_EXPORTER="console")
    service = await _start(
        "services", "--no-auth", env={**env, "SWITCHBOARD_LISTEN": "127.0.0.1:0"}
    )
    gateway: asyncio.subprocess.Process | None = None
    try:
        address = (await _line(service.stderr, r"listening on (\S+)")).group(1)
        args = ("--listen", "127.0.0.1:0", "--backend", address, "--no-auth")
        gateway = await _start("gateway", *args, env=env)
        base = (await _line(gateway.stdout, r"gateway listening on (\S+)")).group(1)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/v1/rooms?roomId=lobby", json={}) as got:
                assert got.status == 201
            url = f"{base}/v1/rooms/lobby/messages"
            async with session.post(url, json={"text": "hi"}, headers=headers_of(client)) as got:
                assert got.status == 201
        gateway_spans = _printed_spans(await _stopped(gateway))
        service_spans = _printed_spans(await _stopped(service))
    finally:
        for process in (gateway, service):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    [front] = [span for span in gateway_spans if span["name"] == POST_MESSAGE]
    [behind] = [s for s in service_spans if s["name"] == "switchboard.v1.ChatService/PostMessage"]
    assert front["resource"]["attributes"]["service.name"] == "switchboard-gateway"
    assert behind["resource"]["attributes"]["service.name"] == "switchboard-service"
    assert front["context"]["trace_id"] == f"0x{client.trace_id:032x}"
    assert front["parent_id"] == f"0x{client.span_id:016x}"
    assert behind["context"]["trace_id"] == f"0x{client.trace_id:032x}"
    assert behind["parent_id"] == front["context"]["span_id"]
    assert front["kind"] == behind["kind"] == "SpanKind.SERVER"


def _otlp_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(_otlp_installed(), reason="the [otel] extra is installed")
@pytest.mark.parametrize("module", ["gateway", "services"])
async def test_otlp_without_the_extra_is_a_configuration_error(module: str) -> None:
    env = _env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    backend = ("--backend", "127.0.0.1:1") if module == "gateway" else ()
    process = await _start(module, "--no-auth", *backend, env=env)
    _, err = await asyncio.wait_for(process.communicate(), WITHIN * 3)
    assert process.returncode == 2
    assert "switchboard[otel]" in err.decode()
