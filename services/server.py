"""Assembles the gRPC server and runs it until SIGTERM/SIGINT.

The server carries the three Switchboard services, grpc.health.v1 (SERVING for ""
and each service) and server reflection for all of them, so ``grpcurl`` needs no
proto files. Graceful shutdown, in order: health goes NOT_SERVING, the engine
closes (every live stream ends with UNAVAILABLE so clients resume elsewhere), then
``server.stop(grace)`` lets in-flight unary calls finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.chat import ChatServicer
from services.config import ServiceConfig
from services.engine import Engine
from services.presence import PresenceServicer
from services.rooms import RoomServicer
from switchboard.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
    rooms_pb2,
    rooms_pb2_grpc,
)

log = logging.getLogger("services")

SERVICE_NAMES = (
    rooms_pb2.DESCRIPTOR.services_by_name["RoomService"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name,
)
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(slots=True)
class SwitchboardServer:
    """A built (not yet started) server, its bound port, and what shutdown needs."""

    server: grpc.aio.Server
    port: int
    engine: Engine
    health: Any  # grpc_health.v1._async.HealthServicer (untyped)

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def shutdown(self, grace: float) -> None:
        """Health NOT_SERVING, engine closed (streams end UNAVAILABLE), then stop."""
        await self.health.enter_graceful_shutdown()
        await self.engine.close()
        await self.server.stop(grace)


def build_server(
    config: ServiceConfig,
    engine: Engine,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> SwitchboardServer:
    """Builds the server and binds ``config.listen``; raises RuntimeError if it cannot."""
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_receive_message_bytes),
            ("grpc.max_send_message_length", config.max_receive_message_bytes),
        ],
    )
    rooms_pb2_grpc.add_RoomServiceServicer_to_server(RoomServicer(engine), server)
    chat = ChatServicer(engine, max_message_bytes=config.max_message_bytes)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, server)
    presence_pb2_grpc.add_PresenceServiceServicer_to_server(PresenceServicer(engine), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError as error:
        raise RuntimeError(f"cannot listen on {config.listen!r}: {error}") from None
    if port == 0:
        raise RuntimeError(f"cannot listen on {config.listen!r}")
    return SwitchboardServer(server, port, engine, health)


def listen_address(config: ServiceConfig, port: int) -> str:
    """``config.listen`` with the bound port (resolves port 0)."""
    host = config.listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def serve(config: ServiceConfig, engine: Engine | None = None) -> None:
    """Runs the service until SIGTERM or SIGINT, then shuts down gracefully."""
    if engine is None:
        from services.engine.memory import MemoryEngine

        engine = MemoryEngine(config.engine_config())
    switchboard = build_server(config, engine)
    await switchboard.start()
    log.info("switchboard listening on %s", listen_address(config, switchboard.port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("shutting down (grace %.1f s)", config.grace_period_s)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await switchboard.shutdown(config.grace_period_s)
        log.info("stopped")
