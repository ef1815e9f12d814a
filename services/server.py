"""Assembles the gRPC server and runs it until SIGTERM/SIGINT.

The server carries the three Switchboard services, StreamShareService, UnaryTunnelService
(services/tunnel.py: the unary methods of the three, many calls in one call from a gateway),
grpc.health.v1 (SERVING for "" and each service) and server reflection for all of them, so
``grpcurl`` needs no proto files. Graceful shutdown, in order: health goes NOT_SERVING, every
unary tunnel stops taking calls and finishes its running ones, the engine closes (every live
stream ends with UNAVAILABLE so clients resume elsewhere), then ``server.stop(grace)`` lets
in-flight unary calls finish.

ChatService, StreamShareService and UnaryTunnelService are registered by ``add_bytes_service``
(not the generated functions) with the ``wire_bytes`` response serializer, so their streams
can yield events serialized once per event (see services/convert.py); every other service
uses the generated registration. StreamShareService (services/share.py) and
UnaryTunnelService are public to the interceptor; they decide each attached caller and each
tunnelled call with the same ``AuthInterceptor.authorize``.

Auth: ``guarded(auth)`` opens the shared Authenticator (gateway/authconfig.py) and yields the
``AuthInterceptor`` for it; every call is then verified against the method's AuthRule, the
methods with no rule are logged as denied at start-up. ``auth=None`` (``--no-auth``) logs a
loud warning and installs nothing: every caller is ``ANONYMOUS``.

Tracing (services/telemetry.py): when tracing is configured when ``build_server`` runs, it puts
``TracingInterceptor`` before the given interceptors (so a call refused by auth has its span)
and gives the same spans to UnaryTunnelService (a span per tunnelled call) and
StreamShareService (a span per attach); otherwise none of it is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gateway.authconfig import AuthConfig, open_authenticator
from gateway.policy import methods_without_rule
from services.auth import AuthInterceptor
from services.chat import ChatServicer
from services.config import ServiceConfig
from services.engine import Engine
from services.presence import PresenceServicer
from services.rooms import RoomServicer
from services.share import ShareServicer
from services.telemetry import TracingInterceptor, rpc_spans
from services.tunnel import TunnelServicer, UnaryMethod
from switchboard.gateway.v1 import share_pb2, tunnel_pb2
from switchboard.v1 import (
    chat_pb2,
    presence_pb2,
    presence_pb2_grpc,
    rooms_pb2,
    rooms_pb2_grpc,
)

log = logging.getLogger("services")

CHAT_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
SHARE_SERVICE = share_pb2.DESCRIPTOR.services_by_name["StreamShareService"]
TUNNEL_SERVICE = tunnel_pb2.DESCRIPTOR.services_by_name["UnaryTunnelService"]
ROOM_SERVICE = rooms_pb2.DESCRIPTOR.services_by_name["RoomService"]
PRESENCE_SERVICE = presence_pb2.DESCRIPTOR.services_by_name["PresenceService"]
SERVICES = (ROOM_SERVICE, CHAT_SERVICE, PRESENCE_SERVICE, SHARE_SERVICE, TUNNEL_SERVICE)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
Interceptors: TypeAlias = "tuple[grpc.aio.ServerInterceptor[Any, Any], ...]"  # generic in stubs


ENGINE_CHECK_S = 1.0  # how often health asks the engine whether its storage answers


@dataclass(slots=True)
class SwitchboardServer:
    """A built (not yet started) server, its bound port, and what shutdown needs.

    Health follows the engine: every ``ENGINE_CHECK_S`` the server asks ``engine.reachable()``
    and sets "" and every service NOT_SERVING while the storage (Redis) does not answer, SERVING
    again once it does, so a load balancer's or the gateway's readiness check sees an
    instance that can only answer UNAVAILABLE."""

    server: grpc.aio.Server
    port: int
    engine: Engine
    health: Any  # grpc_health.v1._async.HealthServicer (untyped)
    tunnel: TunnelServicer
    watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.watcher = asyncio.ensure_future(self._watch_engine())

    async def _set_health(self, status: Any) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _watch_engine(self) -> None:
        serving = True
        while True:
            await asyncio.sleep(ENGINE_CHECK_S)
            reachable = await self.engine.reachable()
            if reachable == serving:
                continue
            serving = reachable
            if serving:
                log.info("engine storage answers again: health SERVING")
                await self._set_health(health_pb2.HealthCheckResponse.SERVING)
            else:
                log.warning("engine storage does not answer: health NOT_SERVING")
                await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def shutdown(self, grace: float) -> None:
        """Health NOT_SERVING, tunnels drained (their running calls finish), engine closed
        (streams end UNAVAILABLE), then stop."""
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        await self.health.enter_graceful_shutdown()
        await self.tunnel.drain(grace)
        await self.engine.close()
        await self.server.stop(grace)


def wire_bytes(response: Message | bytes) -> bytes:
    """The response serializer of ChatService: bytes pass through, messages are serialized."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_bytes_service(
    servicer: object, service: ServiceDescriptor, server: grpc.aio.Server
) -> None:
    """Register ``service`` as the generated code does, but with ``wire_bytes`` as every
    method's response serializer, so streams may yield events serialized once per event."""
    handlers = {
        method.name: _handler_factory(method)(
            getattr(servicer, method.name),
            request_deserializer=GetMessageClass(method.input_type).FromString,
            response_serializer=wire_bytes,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # grpc-stubs lacks this grpcio >= 1.62 method, which the generated code calls too.
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


def unary_methods(
    servicers: Sequence[tuple[object, ServiceDescriptor]],
) -> dict[str, UnaryMethod]:
    """The unary methods of ``servicers`` as UnaryTunnelService runs them (full name → method),
    with the codec the server registers for them."""
    return {
        f"/{service.full_name}/{method.name}": UnaryMethod(
            getattr(servicer, method.name),
            GetMessageClass(method.input_type).FromString,
            wire_bytes,
        )
        for servicer, service in servicers
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    }


def _handler_factory(method: MethodDescriptor) -> Callable[..., grpc.RpcMethodHandler[Any, Any]]:
    """grpc's handler constructor for the method's cardinality."""
    if method.client_streaming:
        if method.server_streaming:
            return grpc.stream_stream_rpc_method_handler
        return grpc.stream_unary_rpc_method_handler
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler
    return grpc.unary_unary_rpc_method_handler


def build_server(
    config: ServiceConfig,
    engine: Engine,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> SwitchboardServer:
    """Builds the server and binds ``config.listen``; raises RuntimeError if it cannot.

    The AuthInterceptor among ``interceptors`` (if any) also decides each Share attach. With
    tracing configured, a TracingInterceptor runs before ``interceptors``."""
    spans = rpc_spans()
    traced = interceptors if spans is None else (TracingInterceptor(spans), *interceptors)
    server = grpc.aio.server(
        interceptors=traced,
        options=[
            ("grpc.max_receive_message_length", config.max_receive_message_bytes),
            ("grpc.max_send_message_length", config.max_receive_message_bytes),
        ],
    )
    rooms, presence = RoomServicer(engine), PresenceServicer(engine)
    rooms_pb2_grpc.add_RoomServiceServicer_to_server(rooms, server)
    chat = ChatServicer(engine, max_message_bytes=config.max_message_bytes)
    add_bytes_service(chat, CHAT_SERVICE, server)
    presence_pb2_grpc.add_PresenceServiceServicer_to_server(presence, server)
    auth = next((i for i in interceptors if isinstance(i, AuthInterceptor)), None)
    add_bytes_service(ShareServicer(engine, auth=auth, spans=spans), SHARE_SERVICE, server)
    tunnel = TunnelServicer(
        unary_methods(((rooms, ROOM_SERVICE), (chat, CHAT_SERVICE), (presence, PRESENCE_SERVICE))),
        auth=auth,
        max_response_bytes=config.max_receive_message_bytes,
        spans=spans,
    )
    add_bytes_service(tunnel, TUNNEL_SERVICE, server)
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
    return SwitchboardServer(server, port, engine, health, tunnel)


def listen_address(config: ServiceConfig, port: int) -> str:
    """``config.listen`` with the bound port (resolves port 0)."""
    host = config.listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


@contextlib.asynccontextmanager
async def guarded(auth: AuthConfig | None) -> AsyncIterator[Interceptors]:
    """The interceptors enforcing ``auth`` (none, with a warning, when it is None)."""
    if auth is None:
        log.warning("AUTHENTICATION IS OFF (--no-auth): every caller is let in, unchecked")
        yield ()
        return
    async with open_authenticator(auth) as authenticator:
        for path in methods_without_rule(SERVICES):
            log.warning("no auth rule, denied to every caller: %s", path)
        log.info("auth on: every call needs a valid bearer token unless its method is public")
        yield (AuthInterceptor(authenticator),)


async def serve(
    config: ServiceConfig, engine: Engine | None = None, *, auth: AuthConfig | None = None
) -> None:
    """Runs the service until SIGTERM or SIGINT, then shuts down gracefully.

    ``auth`` None runs without authentication (the command line asks for ``--no-auth``)."""
    async with guarded(auth) as interceptors:
        _settle_heap()
        await _serve(config, engine, interceptors)


def _settle_heap() -> None:
    """Move everything alive at start-up (modules, descriptors, auth) out of the collector's
    sight, so full collections walk only what calls and streams create afterwards."""
    gc.collect()
    gc.freeze()


async def open_engine(config: ServiceConfig) -> Engine:
    """The engine ``config.engine`` names; a Redis engine is checked to answer first."""
    if config.engine == "memory":
        from services.engine.memory import MemoryEngine

        return MemoryEngine(config.engine_config())
    from services.engine.redis import RedisEngine

    engine = RedisEngine(config.engine, config.engine_config())
    try:
        await engine.ping()
    except RuntimeError:
        await engine.close()
        raise
    log.info("engine: Redis at %s (prefix %r)", engine.address, engine.prefix)
    return engine


async def _serve(config: ServiceConfig, engine: Engine | None, interceptors: Interceptors) -> None:
    if engine is None:
        engine = await open_engine(config)
    switchboard = build_server(config, engine, interceptors=interceptors)
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
