"""Shared fixtures for the gateway tests: echo backends and gateways in front of them.

``echo`` is a running echo backend for the ``testing.v1`` services; ``gateway_for(settings)``
starts the gateway application on 127.0.0.1:0 (through pytest-aiohttp) and returns a client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from gateway.app import build_app
from gateway.config import Settings
from tests.gateway.echo_backend import EchoServer, running_echo
from tests.gateway.everything import DESCRIPTOR_SET, everything_pb2

SERVICES = tuple(everything_pb2.DESCRIPTOR.services_by_name.values())
EVERYTHING_MODULE = "testing.v1.everything_pb2"

GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with running_echo(SERVICES) as server:
        yield server


@pytest.fixture
def descriptor_set_file(tmp_path: Path) -> Path:
    path = tmp_path / "everything.binpb"
    path.write_bytes(DESCRIPTOR_SET)
    return path


def echo_settings(echo: EchoServer, **changes: object) -> Settings:
    """Settings serving the testing.v1 modules from ``echo``; ``changes`` override fields."""
    settings = Settings(backends={"*": (echo.address,)}, modules=(EVERYTHING_MODULE,))
    return dataclasses.replace(settings, **changes)


@pytest.fixture
async def gateway_for() -> AsyncIterator[GatewayFactory]:
    """Start gateways for settings; each is closed at the end of the test."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(settings: Settings) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(build_app(settings))
        )
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def gateway(
    echo: EchoServer, gateway_for: GatewayFactory
) -> TestClient[web.Request, web.Application]:
    """A gateway in front of ``echo`` using the generated testing.v1 modules."""
    return await gateway_for(echo_settings(echo))


def edited_descriptor_set(method_name: str, rule: http_pb2.HttpRule | None) -> bytes:
    """The testing.v1 descriptor set with ``method_name``'s HttpRule replaced (None: removed)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if method.name != method_name:
                    continue
                method.options.ClearExtension(annotations_pb2.http)
                if rule is not None:
                    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
                return files.SerializeToString()
    raise AssertionError(f"no method {method_name}")
