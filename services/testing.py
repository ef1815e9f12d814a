"""A test harness shipped with the package: a real server on 127.0.0.1:0.

    async with running_server() as handle:
        room = await handle.rooms.CreateRoom(...)

The handle's stubs share one channel; ``handle.channel()`` opens another (closed
when the block exits). Without ``auth`` the server checks no token (every caller is
ANONYMOUS unless a test interceptor says otherwise); ``running_server(auth=AuthConfig(...))``
runs the real AuthInterceptor with that config, exactly as ``python -m services serve``
does, and its JWKS refresher (if any) for as long as the block runs. Unless an engine is
passed in, a fresh MemoryEngine is made from ``config`` and closed on exit.
``handle.shutdown()`` runs the graceful shutdown sequence early (health NOT_SERVING,
engine closed, server stopped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway.authconfig import AuthConfig
from services.config import ServiceConfig
from services.engine import Engine
from services.engine.memory import MemoryEngine
from services.server import SwitchboardServer, build_server, guarded
from switchboard.v1 import chat_pb2_grpc, presence_pb2_grpc, rooms_pb2_grpc


@dataclass
class ServerHandle:
    """A running server and ready stubs for its three services."""

    address: str
    engine: Engine
    server: grpc.aio.Server
    switchboard: SwitchboardServer
    rooms: rooms_pb2_grpc.RoomServiceAsyncStub
    chat: chat_pb2_grpc.ChatServiceAsyncStub
    presence: presence_pb2_grpc.PresenceServiceAsyncStub
    _channels: list[grpc.aio.Channel] = field(default_factory=list, repr=False)

    def channel(self) -> grpc.aio.Channel:
        """A new insecure channel to the server, closed when the harness exits."""
        channel = grpc.aio.insecure_channel(self.address)
        self._channels.append(channel)
        return channel

    async def shutdown(self, grace: float = 1.0) -> None:
        await self.switchboard.shutdown(grace)

    async def _close(self) -> None:
        for channel in self._channels:
            await channel.close(None)


@asynccontextmanager
async def running_server(
    config: ServiceConfig | None = None,
    engine: Engine | None = None,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    auth: AuthConfig | None = None,
    port: int = 0,
) -> AsyncIterator[ServerHandle]:
    """Starts a server on 127.0.0.1:``port`` (``config.listen`` is ignored; 0, the default,
    lets the kernel choose; a fixed port restarts a backend where clients expect it) and
    yields a handle.

    ``auth`` adds the AuthInterceptor (before ``interceptors``)."""
    async with AsyncExitStack() as stack:
        guards = await stack.enter_async_context(guarded(auth)) if auth is not None else ()
        async with _running(config, engine, (*guards, *interceptors), port) as handle:
            yield handle


@asynccontextmanager
async def _running(
    config: ServiceConfig | None,
    engine: Engine | None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]],
    port: int,
) -> AsyncIterator[ServerHandle]:
    config = dataclasses.replace(config or ServiceConfig(), listen=f"127.0.0.1:{port}")
    own_engine = engine is None
    if engine is None:
        engine = MemoryEngine(config.engine_config())
    switchboard = build_server(config, engine, interceptors=interceptors)
    await switchboard.start()
    address = f"127.0.0.1:{switchboard.port}"
    channel = grpc.aio.insecure_channel(address)
    handle = ServerHandle(
        address=address,
        engine=engine,
        server=switchboard.server,
        switchboard=switchboard,
        rooms=rooms_pb2_grpc.RoomServiceStub(channel),
        chat=chat_pb2_grpc.ChatServiceStub(channel),
        presence=presence_pb2_grpc.PresenceServiceStub(channel),
        _channels=[channel],
    )
    try:
        yield handle
    finally:
        await handle._close()
        await switchboard.server.stop(None)
        if own_engine:
            await engine.close()
