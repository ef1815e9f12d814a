"""The service's trace spans (services/telemetry.py) and the tracing start-up decision.

A real server, built while an SDK TracerProvider recording into an InMemorySpanExporter (with a
SimpleSpanProcessor, as the SDK's documentation suggests for tests) is installed
(``gateway.telemetry.installed``, which puts the previous provider back), called as a client
would call it with a W3C ``traceparent`` in its metadata. The spans it records must continue the
client's trace, name the method, carry its status code, and cover a stream until it ends; calls
carried by a Tunnel call get a span each and the Tunnel call none. The environment-variable
tests read the decision ``python -m services serve`` and ``python -m gateway`` make at start-up.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import telemetry
from gateway.telemetry import TelemetryError, TracingPlan, plan
from gateway.tunnel import TUNNEL_METHOD
from services.testing import ServerHandle, running_server
from switchboard.gateway.v1 import share_pb2, tunnel_pb2
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.gateway.signing import deployment_config
from tests.services.conftest import eventually, fails, read, within

ROOM = "rooms/lobby"


# --- helpers (tests/gateway/test_tracing.py uses them too) ------------------------------------


@contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """Tracing on for what is built in the block: every ended span lands in the exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with telemetry.installed(provider):
            yield exporter
    finally:
        provider.shutdown()


@dataclass(frozen=True)
class ClientTrace:
    """A client's span context, as its ``traceparent`` says it."""

    trace_id: int
    span_id: int

    @classmethod
    def new(cls) -> ClientTrace:
        return cls(secrets.randbits(128) | 1, secrets.randbits(64) | 1)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("traceparent", self.traceparent), ("tracestate", "vendor=client"))


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(exporter, name)
    names = [span.name for span in exporter.get_finished_spans()]
    assert len(found) == 1, f"{len(found)} spans named {name!r} among {names}"
    return found[0]


def parent_of(span: ReadableSpan) -> tuple[int, int]:
    """(trace id, parent span id) of ``span``; it must have a parent."""
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.trace_id, span.parent.span_id


def child_of(span: ReadableSpan, client: ClientTrace) -> bool:
    context = span.context
    assert context is not None
    return parent_of(span) == (client.trace_id, client.span_id) and (
        context.trace_id == client.trace_id
    )


# --- plain calls: the interceptor --------------------------------------------------------------


async def test_a_direct_call_continues_the_callers_trace() -> None:
    client = ClientTrace.new()
    with recording() as spans:
        async with running_server() as sb:
            request = rooms_pb2.CreateRoomRequest(room_id="lobby")
            await within(sb.rooms.CreateRoom(request, metadata=client.metadata))
    span = only(spans, "switchboard.v1.RoomService/CreateRoom")
    assert span.kind is SpanKind.SERVER
    assert child_of(span, client)
    assert span.context is not None
    assert span.context.trace_state.get("vendor") == "client"
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "switchboard.v1.RoomService",
        "rpc.method": "CreateRoom",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_a_failed_call_records_its_code_and_a_call_without_context_starts_a_trace() -> None:
    client = ClientTrace.new()
    with recording() as spans:
        async with running_server() as sb:
            missing = sb.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/nope"))
            await fails(missing, grpc.StatusCode.NOT_FOUND)
            await sb.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="x"))  # no context
            broken = sb.chat.PostMessage(
                chat_pb2.PostMessageRequest(parent="rooms/x"),
                metadata=(("traceparent", client.traceparent),),
            )
            await fails(broken, grpc.StatusCode.INVALID_ARGUMENT)
    get = only(spans, "switchboard.v1.RoomService/GetRoom")
    assert (get.attributes or {})["rpc.grpc.status_code"] == 5
    assert get.status.status_code is StatusCode.UNSET  # NOT_FOUND is the caller's mistake
    assert get.parent is None  # no traceparent: a new trace
    post = only(spans, "switchboard.v1.ChatService/PostMessage")
    assert (post.attributes or {})["rpc.grpc.status_code"] == 3
    assert child_of(post, client)


async def test_a_call_refused_by_auth_has_its_span(tmp_path: Path) -> None:
    client = ClientTrace.new()
    with recording() as spans:
        async with running_server(auth=deployment_config(tmp_path)) as sb:
            call = sb.rooms.CreateRoom(
                rooms_pb2.CreateRoomRequest(room_id="lobby"), metadata=client.metadata
            )
            await fails(call, grpc.StatusCode.UNAUTHENTICATED)
    span = only(spans, "switchboard.v1.RoomService/CreateRoom")
    assert child_of(span, client)
    assert (span.attributes or {})["rpc.grpc.status_code"] == 16


async def test_a_stream_span_lasts_until_the_stream_ends() -> None:
    client = ClientTrace.new()
    with recording() as spans:
        async with running_server() as sb:
            await sb.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
            stream = sb.chat.Subscribe(
                chat_pb2.SubscribeRequest(room=ROOM), metadata=client.metadata
            )
            assert (await read(stream)).HasField("subscribed")
            await sb.chat.PostMessage(
                chat_pb2.PostMessageRequest(parent=ROOM, message=chat_pb2.Message(text="hi"))
            )
            event = await read(stream)
            while not event.HasField("message_posted"):  # presence events come and go
                event = await read(stream)
            assert event.message_posted.text == "hi"
            assert named(spans, "switchboard.v1.ChatService/Subscribe") == []  # still open
            stream.cancel()

            async def ended() -> bool:
                return bool(named(spans, "switchboard.v1.ChatService/Subscribe"))

            await eventually(ended)
    span = only(spans, "switchboard.v1.ChatService/Subscribe")
    assert child_of(span, client)
    assert (span.attributes or {})["rpc.grpc.status_code"] == 1  # CANCELLED by the client


# --- calls carried by other calls: Tunnel and Share --------------------------------------------


def _tunnel_call(number: int, name: str, client: ClientTrace) -> tunnel_pb2.TunnelCall:
    return tunnel_pb2.TunnelCall(
        id=number,
        method="/switchboard.v1.RoomService/GetRoom",
        request=rooms_pb2.GetRoomRequest(name=name).SerializeToString(),
        metadata=[share_pb2.ShareMetadata(key=k, value=v.encode()) for k, v in client.metadata],
        timeout=Duration(seconds=10),
    )


async def _tunnelled(
    sb: ServerHandle, calls: list[tunnel_pb2.TunnelCall]
) -> dict[int, tunnel_pb2.TunnelReply]:
    """Sends ``calls`` in one Tunnel call, as a gateway does; their replies by id."""
    tunnel = sb.channel().stream_stream(
        TUNNEL_METHOD,
        request_serializer=tunnel_pb2.TunnelRequest.SerializeToString,
        response_deserializer=tunnel_pb2.TunnelResponse.FromString,
    )
    call = tunnel()
    await within(call.initial_metadata())  # the tunnel is open
    await within(call.write(tunnel_pb2.TunnelRequest(calls=calls)))
    replies: dict[int, tunnel_pb2.TunnelReply] = {}
    while len(replies) < len(calls):
        response = await read(call)
        replies.update((reply.id, reply) for reply in response.replies)
    await call.done_writing()
    assert await within(call.read()) is grpc.aio.EOF
    return replies


async def test_each_tunnelled_call_has_its_own_span_and_the_tunnel_none() -> None:
    found, missing = ClientTrace.new(), ClientTrace.new()
    with recording() as spans:
        async with running_server() as sb:
            await sb.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
            replies = await _tunnelled(
                sb, [_tunnel_call(1, ROOM, found), _tunnel_call(2, "rooms/nope", missing)]
            )
    assert (replies[1].status.code, replies[2].status.code) == (0, 5)
    gets = named(spans, "switchboard.v1.RoomService/GetRoom")
    by_trace = {span.context.trace_id: span for span in gets if span.context is not None}
    assert set(by_trace) == {found.trace_id, missing.trace_id}
    assert child_of(by_trace[found.trace_id], found)
    assert child_of(by_trace[missing.trace_id], missing)
    assert (by_trace[found.trace_id].attributes or {})["rpc.grpc.status_code"] == 0
    assert (by_trace[missing.trace_id].attributes or {})["rpc.grpc.status_code"] == 5
    assert named(spans, "switchboard.gateway.v1.UnaryTunnelService/Tunnel") == []


async def test_without_tracing_nothing_is_built_and_trace_context_still_arrives() -> None:
    """Tracing off: no spans, and the servicer still sees the caller's trace context as it is
    (passthrough is the gateway's job: tests/gateway/test_tracing.py)."""
    client = ClientTrace.new()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # exists, but nobody installed it: tracing is off
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert telemetry.tracer("service") is None
    seen: list[tuple[tuple[str, str | bytes], ...]] = []

    class Seeing(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in the stubs
        async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            seen.append(tuple(details.invocation_metadata or ()))
            return await continuation(details)

    async with running_server(interceptors=[Seeing()]) as sb:
        await sb.rooms.CreateRoom(
            rooms_pb2.CreateRoomRequest(room_id="lobby"), metadata=client.metadata
        )
    assert ("traceparent", client.traceparent) in seen[-1]
    assert ("tracestate", "vendor=client") in seen[-1]
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


# --- the start-up decision ---------------------------------------------------------------------


def _plan(**environ: str) -> TracingPlan | None:
    return plan(environ, default_service_name="switchboard-service")


def test_tracing_is_off_unless_the_environment_asks_for_it() -> None:
    assert _plan() is None
    assert _plan(OTEL_TRACES_EXPORTER="none") is None
    assert _plan(OTEL_SERVICE_NAME="svc") is None  # a name alone exports nothing
    assert _plan(OTEL_TRACES_EXPORTER="console") == TracingPlan(("console",), "switchboard-service")
    assert _plan(OTEL_TRACES_EXPORTER=" Console , otlp,console") == TracingPlan(
        ("console", "otlp"), "switchboard-service"
    )
    assert _plan(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318") == TracingPlan(
        ("otlp",), "switchboard-service"
    )
    assert _plan(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://c:4318/v1/traces") is not None
    # An explicit exporter list wins over an endpoint.
    assert _plan(OTEL_TRACES_EXPORTER="console", OTEL_EXPORTER_OTLP_ENDPOINT="http://c") == (
        TracingPlan(("console",), "switchboard-service")
    )


def test_sdk_disabled_wins_over_everything() -> None:
    for value in ("true", "TRUE", " True "):
        assert _plan(OTEL_SDK_DISABLED=value, OTEL_TRACES_EXPORTER="console") is None
        assert _plan(OTEL_SDK_DISABLED=value, OTEL_EXPORTER_OTLP_ENDPOINT="http://c") is None
    assert _plan(OTEL_SDK_DISABLED="false", OTEL_TRACES_EXPORTER="console") is not None


def test_service_name_comes_from_otel_service_name_then_resource_attributes() -> None:
    console = {"OTEL_TRACES_EXPORTER": "console"}
    with_resource = {**console, "OTEL_RESOURCE_ATTRIBUTES": "team=x,service.name=chat%20svc"}
    assert _plan(**with_resource) == TracingPlan(("console",), "chat svc")
    assert _plan(**with_resource, OTEL_SERVICE_NAME="named") == TracingPlan(("console",), "named")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin'"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "'grpc'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "'http/json'",
        ),
    ],
)
def test_what_cannot_be_exported_is_a_configuration_error(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(TelemetryError, match=named):
        plan(environ, default_service_name="x")


def test_the_console_exporter_prints_each_span_with_the_service_name() -> None:
    out = io.StringIO()
    tracing = _plan(OTEL_TRACES_EXPORTER="console")
    assert tracing is not None
    provider = telemetry.build_provider(tracing, console_out=out)
    try:
        with telemetry.installed(provider):
            tracer = telemetry.tracer("service")
            assert tracer is not None
            tracer.start_span("switchboard.v1.RoomService/GetRoom").end()
    finally:
        provider.shutdown()  # flushes the batch
    printed = out.getvalue()
    assert '"name": "switchboard.v1.RoomService/GetRoom"' in printed
    assert '"service.name": "switchboard-service"' in printed


def _in_trace(spans: InMemorySpanExporter, client: ClientTrace) -> list[ReadableSpan]:
    found = spans.get_finished_spans()
    return [s for s in found if s.context is not None and s.context.trace_id == client.trace_id]


async def test_each_attach_to_a_shared_stream_has_a_subscribe_span_for_its_life() -> None:
    """StreamShareService: a Subscribe span per attach, from the attach's metadata: a refused
    attach's ends at once with its code, a detached one's when it detaches, one still attached
    when the gateway ends the Share call with the call; the Share call has none."""
    detached, refused, staying = ClientTrace.new(), ClientTrace.new(), ClientTrace.new()
    subscribe = chat_pb2.SubscribeRequest(room=ROOM).SerializeToString()
    other_room = chat_pb2.SubscribeRequest(room="rooms/other").SerializeToString()

    def attach(handle: int, request: bytes, client: ClientTrace) -> share_pb2.ShareRequest:
        entries = [share_pb2.ShareMetadata(key=k, value=v.encode()) for k, v in client.metadata]
        attached = share_pb2.ShareAttach(handle=handle, request=request, metadata=entries)
        return share_pb2.ShareRequest(attach=attached)

    with recording() as spans:
        async with running_server() as sb:
            await sb.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
            share = sb.channel().stream_stream(
                "/switchboard.gateway.v1.StreamShareService/Share",
                request_serializer=share_pb2.ShareRequest.SerializeToString,
                response_deserializer=share_pb2.ShareResponse.FromString,
            )
            call = share()
            method = "/switchboard.v1.ChatService/Subscribe"
            opened = share_pb2.ShareOpen(method=method, request=subscribe)
            await call.write(share_pb2.ShareRequest(open=opened))

            async def answer_to(handle: int) -> share_pb2.ShareResponse:
                while True:
                    response = await read(call)
                    if handle in response.handles:
                        return response

            await call.write(attach(7, subscribe, detached))
            assert not (await answer_to(7)).HasField("end")
            await call.write(attach(9, other_room, refused))
            assert (await answer_to(9)).end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert [s.name for s in _in_trace(spans, refused)] == [
                "switchboard.v1.ChatService/Subscribe"
            ]
            await call.write(attach(8, subscribe, staying))
            assert not (await answer_to(8)).HasField("end")
            assert _in_trace(spans, detached) == []  # attached: its span is open
            await call.write(share_pb2.ShareRequest(detach=share_pb2.ShareDetach(handle=7)))

            async def detach_ended() -> bool:
                return bool(_in_trace(spans, detached))

            await eventually(detach_ended)
            assert _in_trace(spans, staying) == []
            await call.done_writing()  # the gateway ends the Share call
            while await within(call.read()) is not grpc.aio.EOF:
                pass
    codes = {}
    for client in (detached, refused, staying):
        [span] = _in_trace(spans, client)
        assert span.name == "switchboard.v1.ChatService/Subscribe"
        assert child_of(span, client)
        codes[client] = (span.attributes or {})["rpc.grpc.status_code"]
    assert (codes[detached], codes[refused], codes[staying]) == (0, 3, 0)
    assert named(spans, "switchboard.gateway.v1.StreamShareService/Share") == []
