"""An ECHO gRPC backend for any service: each method answers with the request it received.

``running_echo(services)`` starts a grpc.aio server on 127.0.0.1:0 serving every method of
``services`` through one generic handler, plus grpc.health.v1 and server reflection (from the
default pool, so the services' generated modules must be imported). Every call is recorded in
``EchoServer.calls`` (method path, request, received metadata) so tests can assert exactly what
the gateway transcoded and forwarded.

The response is the request itself when the types match, else the request's wire bytes parsed
as the response type. Request metadata drives the rest:

- ``echo-code: NOT_FOUND`` (a status code name) fails the call with that code, the message from
  ``echo-message``, and details ErrorInfo(reason="ECHO", domain="echo.test") and
  BadRequest(field "id") in ``grpc-status-details-bin``;
- ``echo-initial-<key>: v`` / ``echo-trailer-<key>: v`` send ``<key>: v`` as initial / trailing
  metadata (a ``-bin`` key gets the value's UTF-8 bytes);
- ``echo-http-code: 201`` sends ``x-http-code: 201`` as initial metadata;
- ``echo-stall: 1`` never answers (until the deadline or cancellation);
- ``echo-repeat: n`` makes a server-streaming method answer n times (default 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import (
    HealthServicer,
)  # the aio servicer; `health.aio` re-exports it untyped
from grpc_reflection.v1alpha import reflection

__all__ = ["EchoCall", "EchoServer", "running_echo"]

ECHO_REASON = "ECHO"
ECHO_DOMAIN = "echo.test"


@dataclass(frozen=True)
class EchoCall:
    method: str
    requests: tuple[Message, ...]
    metadata: dict[str, str | bytes]


@dataclass
class EchoServer:
    address: str
    server: grpc.aio.Server
    health: Any
    calls: list[EchoCall] = field(default_factory=list)
    call_arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on every call

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def last(self, method_name: str) -> EchoCall:
        """The most recent call of the method named ``method_name`` (e.g. "GetEverything")."""
        for call in reversed(self.calls):
            if call.method.endswith("/" + method_name):
                return call
        raise AssertionError(f"no call of {method_name}; calls: {[c.method for c in self.calls]}")


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str | bytes]:
    return dict(context.invocation_metadata() or ())


def _answer(method: MethodDescriptor, request: Message) -> Message:
    response_class = GetMessageClass(method.output_type)
    if isinstance(request, response_class):
        return request
    return response_class.FromString(request.SerializeToString())


async def _prologue(
    context: grpc.aio.ServicerContext[Any, Any], metadata: dict[str, str | bytes]
) -> None:
    initial: list[tuple[str, str | bytes]] = []
    trailing: list[tuple[str, str | bytes]] = []
    for key, value in metadata.items():
        if key == "echo-http-code":
            initial.append(("x-http-code", value))
        for prefix, out in (("echo-initial-", initial), ("echo-trailer-", trailing)):
            if key.startswith(prefix):
                name = key.removeprefix(prefix)
                text = value if isinstance(value, str) else value.decode()
                out.append((name, text.encode() if name.endswith("-bin") else text))
    if initial:
        await context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)
    if metadata.get("echo-stall"):
        await asyncio.Event().wait()
    code_name = metadata.get("echo-code")
    if isinstance(code_name, str):
        await _abort(context, code_name, str(metadata.get("echo-message", "echo error")))


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code_name: str, message: str) -> None:
    code = grpc.StatusCode[code_name]
    status = status_pb2.Status(code=getattr(code_pb2, code_name), message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=ECHO_REASON, domain=ECHO_DOMAIN, metadata={"k": "v"})
    )
    violation = error_details_pb2.BadRequest.FieldViolation(field="id", description="bad id")
    status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    trailing = (
        *(context.trailing_metadata() or ()),
        ("grpc-status-details-bin", status.SerializeToString()),
    )
    await context.abort(code, message, trailing_metadata=trailing)


def _handler(method: MethodDescriptor, server: EchoServer) -> grpc.RpcMethodHandler[Any, Any]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_class = GetMessageClass(method.input_type)
    codec: dict[str, Any] = {
        "request_deserializer": request_class.FromString,
        "response_serializer": lambda message: message.SerializeToString(),
    }

    def record(requests: Sequence[Message], metadata: dict[str, str | bytes]) -> None:
        server.calls.append(EchoCall(path, tuple(requests), metadata))
        server.call_arrived.set()

    async def unary_unary(request: Message, context: Any) -> Message:
        metadata = _metadata(context)
        record([request], metadata)
        await _prologue(context, metadata)
        return _answer(method, request)

    async def unary_stream(request: Message, context: Any) -> AsyncIterator[Message]:
        metadata = _metadata(context)
        record([request], metadata)
        await _prologue(context, metadata)
        for _ in range(int(str(metadata.get("echo-repeat", "1")))):
            yield _answer(method, request)

    async def stream_unary(requests: AsyncIterator[Message], context: Any) -> Message:
        metadata = _metadata(context)
        received = [request async for request in requests]
        record(received, metadata)
        await _prologue(context, metadata)
        return _answer(method, received[-1] if received else request_class())

    async def stream_stream(
        requests: AsyncIterator[Message], context: Any
    ) -> AsyncIterator[Message]:
        metadata = _metadata(context)
        record([], metadata)
        await _prologue(context, metadata)
        async for request in requests:
            yield _answer(method, request)

    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)


@asynccontextmanager
async def running_echo(services: Sequence[ServiceDescriptor]) -> AsyncIterator[EchoServer]:
    """An echo server for ``services`` on 127.0.0.1:0, SERVING, with reflection."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    health_servicer = HealthServicer()
    echo = EchoServer(address=f"127.0.0.1:{port}", server=server, health=health_servicer)
    for service in services:
        handlers = {method.name: _handler(method, echo) for method in service.methods}
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service.full_name, handlers)]
        )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [service.full_name for service in services]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield echo
    finally:
        await server.stop(None)
