"""Fixtures for the service tests: a real server per test, callers with identities.

The server runs with ``MetadataIdentity``, a test-only interceptor that sets
CURRENT_IDENTITY from ``x-test-user`` / ``x-test-permissions`` metadata the way the
auth interceptor does from a verified token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.config import ServiceConfig
from services.identity import CURRENT_IDENTITY, Identity
from services.testing import ServerHandle, running_server
from switchboard.v1 import rooms_pb2
from tests.services.redis_server import redis_url  # one redis-server per session, shared

__all__ = ["redis_url"]  # a fixture: conftest makes it visible to every test module

T = TypeVar("T")
TIMEOUT = 15.0  # a hang guard, not a speed check: the machine may be loaded


class MetadataIdentity(grpc.aio.ServerInterceptor):
    """Sets CURRENT_IDENTITY for the handler from x-test-* metadata."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        user = metadata.get("x-test-user")
        if handler is None or user is None:
            return handler
        permissions = frozenset(filter(None, metadata.get("x-test-permissions", "").split(",")))
        return _with_identity(handler, Identity(user, permissions=permissions))


def _with_identity(handler: Any, identity: Identity) -> Any:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            CURRENT_IDENTITY.set(identity)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            CURRENT_IDENTITY.set(identity)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    streaming = handler.unary_stream or handler.stream_stream

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        CURRENT_IDENTITY.set(identity)
        async for response in streaming(request, context):
            yield response

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return make(stream, **codec)


def as_user(user: str, *permissions: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that makes the server see ``user`` with ``permissions``."""
    return (("x-test-user", user), ("x-test-permissions", ",".join(permissions)))


async def within(awaitable: Awaitable[T], seconds: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, seconds)


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Waits until ``condition()`` holds, checking as a client would (by asking again)."""

    async def check() -> None:
        while not await condition():  # noqa: ASYNC110  # the server offers no event for this state; ask again like a client
            await asyncio.sleep(0.01)

    await within(check())


def details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The google.rpc detail messages of a failed call, unpacked."""
    status = rpc_status.from_call(error)
    assert isinstance(status, status_pb2.Status)
    unpacked = []
    for any_detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ErrorInfo,
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                unpacked.append(message)
    return unpacked


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    return [
        (v.field, v.description)
        for d in details(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Awaits ``call`` and returns its error, asserting the status code."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await within(call)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


ServerFactory = Callable[..., Any]


@pytest.fixture
def start_server() -> ServerFactory:
    """``async with start_server(config, engine) as handle``: a server with test identities."""

    def start(config: ServiceConfig | None = None, engine: Any = None) -> Any:
        return running_server(config, engine, interceptors=[MetadataIdentity()])

    return start


@pytest.fixture
async def server(start_server: ServerFactory) -> AsyncIterator[ServerHandle]:
    async with start_server() as handle:
        yield handle


async def make_room(handle: ServerHandle, room_id: str = "lobby", **fields: Any) -> rooms_pb2.Room:
    request = rooms_pb2.CreateRoomRequest(room_id=room_id, room=rooms_pb2.Room(**fields))
    return await within(handle.rooms.CreateRoom(request))


async def read(call: Any) -> Any:
    """The next message of a stream (fails the test if it ended or is silent too long)."""
    message = await within(call.read())
    assert message is not grpc.aio.EOF, "the stream ended"
    return message


async def read_n(call: Any, count: int) -> list[Any]:
    return [await read(call) for _ in range(count)]


async def ended_with(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Reads a stream to its end, asserting it ends with ``code``."""

    async def drain() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await within(drain())
    assert caught.value.code() == code, caught.value.details()
    return caught.value
