"""The echo backend (tests/gateway/echo_backend.py) with UnaryTunnelService in front of it.

``running_tunnel_echo(services)`` serves every method of ``services`` with the echo handlers,
as ``running_echo`` does, and also ``switchboard.gateway.v1.UnaryTunnelService`` over their
unary methods (services/tunnel.py's ``TunnelServicer``, no auth), so a gateway sends its REST
calls through a tunnel and the same echo rules (``echo-code``, ``echo-initial-*``,
``echo-trailer-*``, ``echo-http-code``, ``echo-stall``) apply to tunnelled calls. Every call,
plain or tunnelled, is recorded in ``EchoServer.calls``. ``tunnel=False`` leaves the tunnel
out; ``interceptors`` run for every plain call (and for the Tunnel call itself, not for the
calls it carries, as on the Switchboard server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.server import TUNNEL_SERVICE, add_bytes_service
from services.tunnel import TunnelServicer, UnaryMethod
from tests.gateway.echo_backend import EchoServer, _handler

__all__ = ["running_tunnel_echo"]

MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # grpc's default send limit


@asynccontextmanager
async def running_tunnel_echo(
    services: Sequence[ServiceDescriptor],
    *,
    tunnel: bool = True,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> AsyncIterator[EchoServer]:
    """An echo server for ``services`` on 127.0.0.1:0, SERVING, with UnaryTunnelService
    unless ``tunnel`` is False."""
    server = grpc.aio.server(interceptors=interceptors)
    port = server.add_insecure_port("127.0.0.1:0")
    health_servicer = HealthServicer()
    echo = EchoServer(address=f"127.0.0.1:{port}", server=server, health=health_servicer)
    unary: dict[str, UnaryMethod] = {}
    for service in services:
        handlers = {method.name: _handler(method, echo) for method in service.methods}
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service.full_name, handlers)]
        )
        for name, handler in handlers.items():
            if handler.unary_unary is not None:
                unary[f"/{service.full_name}/{name}"] = UnaryMethod(
                    handler.unary_unary,
                    handler.request_deserializer,  # type: ignore[arg-type]  # set by _handler
                    handler.response_serializer,  # type: ignore[arg-type]  # set by _handler
                )
    names = [service.full_name for service in services]
    if tunnel:
        servicer = TunnelServicer(unary, auth=None, max_response_bytes=MAX_RESPONSE_BYTES)
        add_bytes_service(servicer, TUNNEL_SERVICE, server)
        names.append(TUNNEL_SERVICE.full_name)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield echo
    finally:
        await server.stop(None)
