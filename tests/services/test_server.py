"""Server assembly: health, reflection, message size limits, graceful shutdown."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.config import ServiceConfig
from services.engine.memory import MemoryEngine
from services.server import SERVICE_NAMES, build_server, listen_address
from services.testing import ServerHandle
from switchboard.v1 import chat_pb2
from tests.services.conftest import ServerFactory, ended_with, fails, make_room, read, within

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_is_serving_for_the_server_and_each_service(server: ServerHandle) -> None:
    health = health_pb2_grpc.HealthStub(server.channel())
    for name in ("", *SERVICE_NAMES):
        reply = await within(health.Check(health_pb2.HealthCheckRequest(service=name)))
        assert reply.status == SERVING, name
    assert "switchboard.v1.ChatService" in SERVICE_NAMES


async def test_reflection_lists_every_service(server: ServerHandle) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def requests() -> Any:
        yield request

    call = stub.ServerReflectionInfo(requests())
    reply = await read(call)
    names = {service.name for service in reply.list_services_response.service}
    assert names == {
        *SERVICE_NAMES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_messages_over_the_receive_limit_are_refused(start_server: ServerFactory) -> None:
    async with start_server(ServiceConfig(max_message_bytes=1024)) as server:
        await make_room(server)
        huge = chat_pb2.Message(text="x" * (200 * 1024))
        request = chat_pb2.PostMessageRequest(parent="rooms/lobby", message=huge)
        await fails(server.chat.PostMessage(request), grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_graceful_shutdown_ends_streams_unavailable_and_health_not_serving(
    server: ServerHandle,
) -> None:
    await make_room(server)
    health = health_pb2_grpc.HealthStub(server.channel())
    watch = health.Watch(health_pb2.HealthCheckRequest(service="switchboard.v1.ChatService"))
    assert (await read(watch)).status == SERVING
    stream = server.chat.Subscribe(chat_pb2.SubscribeRequest(room="rooms/lobby"))
    await read(stream)

    await within(server.shutdown(grace=0.5))

    error = await ended_with(stream, grpc.StatusCode.UNAVAILABLE)
    assert "resume" in error.details()
    assert (await read(watch)).status == NOT_SERVING


async def test_build_server_refuses_an_address_it_cannot_bind() -> None:
    with pytest.raises(RuntimeError, match=r"999\.1\.1\.1:1"):
        build_server(ServiceConfig(listen="999.1.1.1:1"), MemoryEngine())


def test_listen_address_resolves_port_zero() -> None:
    assert listen_address(ServiceConfig(listen="127.0.0.1:0"), 4711) == "127.0.0.1:4711"
    assert listen_address(ServiceConfig(listen="[::1]:0"), 80) == "[::1]:80"
