"""The gateway's only way to the backends: grpc.aio channels and per-method multicallables.

One channel per backend. A backend with several addresses gets one channel whose target lists
them all (``ipv4:a:1,b:2``) under the ``round_robin`` policy; host names are resolved once at
start-up. A single host name uses the ``dns:`` resolver, which also balances over its records.

Multicallables are built from the method descriptor (serializer: ``SerializeToString``;
deserializer: the response class from ``message_factory.GetMessageClass``) and cached per method.
``raw_unary_stream`` is the server-streaming multicallable without a deserializer: its responses
are the message bytes as received, for bridges that encode identical messages once.
``unary`` makes a route's unary call: through the backend's UnaryTunnelService
(gateway/tunnel.py: many calls share one gRPC call) unless the gateway runs with
``--no-tunnel`` or the backend lacks it, else as a plain call (with what is left of the
deadline when the tunnel handed it back); a backend with several addresses has one tunnel per
address, each on a channel of its own; either way it gives the response
message with its header and trailing metadata, or raises ``grpc.aio.AioRpcError``.
``share_stream`` is a backend's ``switchboard.gateway.v1.StreamShareService/Share`` bidi method
(gateway/bridges/share.py), on the same channel as the routes it shares.

Every call gets a deadline from ``DeadlinePolicy``: the client's ``Grpc-Timeout`` when it sent
one, otherwise the default for the cardinality (30 s for unary), so a stalled backend never
hangs a client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.metadata import Metadata, metadata_pairs
from gateway.routes import Cardinality, Route
from gateway.tunnel import TUNNEL_METHOD, Tunnel, TunnelPool
from switchboard.gateway.v1 import share_pb2, tunnel_pb2

__all__ = [
    "SHARE_METHOD",
    "DeadlinePolicy",
    "Multicallable",
    "RawUnaryStream",
    "ShareStream",
    "StreamStream",
    "StreamUnary",
    "UnaryReply",
    "UnaryStream",
    "UnaryUnary",
    "Upstream",
    "channel_target",
    "message_class",
]

UnaryUnary = grpc.aio.UnaryUnaryMultiCallable[Message, Message]
UnaryStream = grpc.aio.UnaryStreamMultiCallable[Message, Message]
RawUnaryStream = grpc.aio.UnaryStreamMultiCallable[Message, bytes]
StreamUnary = grpc.aio.StreamUnaryMultiCallable[Message, Message]
StreamStream = grpc.aio.StreamStreamMultiCallable[Message, Message]
Multicallable = UnaryUnary | UnaryStream | StreamUnary | StreamStream
ShareStream = grpc.aio.StreamStreamMultiCallable[share_pb2.ShareRequest, share_pb2.ShareResponse]
_SHARE_SERVICE = share_pb2.DESCRIPTOR.services_by_name["StreamShareService"]
SHARE_METHOD = f"/{_SHARE_SERVICE.full_name}/Share"
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


@dataclass(frozen=True)
class DeadlinePolicy:
    """Call timeouts in seconds; ``None`` means no deadline (only for streams)."""

    unary: float = 30.0
    streaming: float | None = None

    def timeout_for(self, cardinality: Cardinality, requested: float | None) -> float | None:
        """The client's requested timeout when given, else the default for ``cardinality``."""
        if requested is not None:
            return requested
        return self.unary if cardinality is Cardinality.UNARY else self.streaming


@dataclass(frozen=True, slots=True)
class UnaryReply:
    """A unary call that ended OK: the response and the metadata the method sent."""

    response: Message
    initial_metadata: Metadata
    trailing_metadata: Metadata


def message_class(descriptor: Descriptor) -> type[Message]:
    """The concrete message class for ``descriptor`` (from any pool)."""
    return GetMessageClass(descriptor)


def channel_target(addresses: Sequence[str]) -> str:
    """A gRPC target naming every address; ``HOST:PORT`` strings, IP literals or one host name."""
    if len(addresses) == 1 and not _is_ip(addresses[0]):
        return f"dns:///{addresses[0]}"
    versions = {_ip_version(address) for address in addresses}
    if versions == {4}:
        return "ipv4:" + ",".join(addresses)
    if versions == {6}:
        return "ipv6:" + ",".join(_bracketed(address) for address in addresses)
    raise ValueError(f"mixed or unresolved addresses in one backend: {', '.join(addresses)}")


async def resolve(addresses: Sequence[str]) -> tuple[str, ...]:
    """Replace host names by their IPv4 addresses (several names in one backend only)."""
    if len(addresses) == 1 or all(_is_ip(address) for address in addresses):
        return tuple(addresses)
    loop = asyncio.get_running_loop()
    resolved: list[str] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if _is_ip(address):
            resolved.append(address)
            continue
        infos = await loop.getaddrinfo(host, int(port), family=socket.AF_INET)
        resolved.extend(sorted({f"{info[4][0]}:{port}" for info in infos}))
    return tuple(resolved)


class Upstream:
    """Channels to every backend and the multicallables of every routed method."""

    def __init__(
        self,
        channels: Mapping[str, grpc.aio.Channel],
        *,
        tunnels: Mapping[str, Sequence[grpc.aio.Channel]] | None = None,
    ) -> None:
        """``tunnels``: per backend, the channels to open tunnels on (one per address)."""
        self._channels = dict(channels)
        self._callables: dict[str, Multicallable] = {}
        self._unary: dict[str, UnaryUnary] = {}  # the REST hot path: one lookup, no checks
        self._decoders: dict[str, Callable[[bytes], Message]] = {}
        self._raw_streams: dict[str, RawUnaryStream] = {}
        self._shares: dict[str, ShareStream] = {}
        self._tunnels: dict[str, TunnelPool] = {}
        self._tunnel_channels: list[grpc.aio.Channel] = []
        for name, members in (tunnels or {}).items():
            pool = [Tunnel(_tunnel_method(member), name) for member in members]
            self._tunnels[name] = TunnelPool(pool)
            self._tunnel_channels.extend(m for m in members if m is not self._channels.get(name))

    @classmethod
    async def connect(
        cls, backends: Mapping[str, Sequence[str]], *, tunnel: bool = True
    ) -> Upstream:
        """Open one channel per backend (name → addresses); ``tunnel`` False: plain unary calls
        only (``--no-tunnel``)."""
        channels: dict[str, grpc.aio.Channel] = {}
        tunnels: dict[str, list[grpc.aio.Channel]] = {}
        for name, addresses in backends.items():
            resolved = await resolve(addresses)
            target = channel_target(resolved)
            channels[name] = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            if tunnel and len(resolved) == 1:
                tunnels[name] = [channels[name]]
            elif tunnel:  # one tunnel per address: a tunnel's stream reaches one server
                tunnels[name] = [
                    grpc.aio.insecure_channel(channel_target([address]), options=CHANNEL_OPTIONS)
                    for address in resolved
                ]
        return cls(channels, tunnels=tunnels)

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def channel(self, backend: str) -> grpc.aio.Channel:
        try:
            return self._channels[backend]
        except KeyError:
            raise KeyError(f"no channel for backend {backend!r}") from None

    def multicallable(self, route: Route) -> Multicallable:
        """The multicallable for the route's method, of the route's cardinality."""
        found = self._callables.get(route.rpc_path)
        if found is None:
            found = self._build(route)
            self._callables[route.rpc_path] = found
        return found

    def unary_unary(self, route: Route) -> UnaryUnary:
        found = self._unary.get(route.rpc_path)
        if found is None:
            built = self.multicallable(_expect(route, Cardinality.UNARY))
            assert isinstance(built, grpc.aio.UnaryUnaryMultiCallable)
            found = self._unary[route.rpc_path] = built
        return found

    def tunnel(self, backend: str) -> TunnelPool | None:
        """The backend's tunnel (None with ``--no-tunnel``); its counters tell how it is used."""
        return self._tunnels.get(backend)

    async def unary(
        self, route: Route, request: Message, metadata: Metadata, time_limit: float | None
    ) -> UnaryReply:
        """The route's unary call (see the module docstring); raises grpc.aio.AioRpcError."""
        tunnel = self._tunnels.get(route.backend)
        if tunnel is not None and tunnel.supported:
            path = route.rpc_path
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await tunnel.call(path, request.SerializeToString(), metadata, time_limit)
            if result is None and time_limit is not None:  # plain after all: what is left
                time_limit = max(0.0, time_limit - (loop.time() - started))
            if result is not None:
                decode = self._decoders.get(path)
                if decode is None:
                    decode = self._decoders[path] = message_class(
                        route.method.output_type
                    ).FromString
                return UnaryReply(
                    decode(result.response), result.initial_metadata, result.trailing_metadata
                )
        call = self.unary_unary(route)(request, metadata=metadata, timeout=time_limit)
        response = await call
        initial = metadata_pairs(await call.initial_metadata())
        trailing = metadata_pairs(await call.trailing_metadata())
        return UnaryReply(response, initial, trailing)

    def unary_stream(self, route: Route) -> UnaryStream:
        found = self.multicallable(_expect(route, Cardinality.SERVER_STREAMING))
        assert isinstance(found, grpc.aio.UnaryStreamMultiCallable)
        return found

    def raw_unary_stream(self, route: Route) -> RawUnaryStream:
        """The route's server-streaming multicallable; responses are undecoded bytes."""
        found = self._raw_streams.get(route.rpc_path)
        if found is None:
            _expect(route, Cardinality.SERVER_STREAMING)
            found = self.channel(route.backend).unary_stream(
                route.rpc_path, request_serializer=_serialize, response_deserializer=None
            )
            self._raw_streams[route.rpc_path] = found
        return found

    def share_stream(self, backend: str) -> ShareStream:
        """The backend's StreamShareService.Share method (no deadline, no metadata needed)."""
        found = self._shares.get(backend)
        if found is None:
            found = self.channel(backend).stream_stream(
                SHARE_METHOD,
                request_serializer=_serialize,
                response_deserializer=share_pb2.ShareResponse.FromString,
            )
            self._shares[backend] = found
        return found

    def stream_unary(self, route: Route) -> StreamUnary:
        found = self.multicallable(_expect(route, Cardinality.CLIENT_STREAMING))
        assert isinstance(found, grpc.aio.StreamUnaryMultiCallable)
        return found

    def stream_stream(self, route: Route) -> StreamStream:
        found = self.multicallable(_expect(route, Cardinality.BIDI_STREAMING))
        assert isinstance(found, grpc.aio.StreamStreamMultiCallable)
        return found

    def _build(self, route: Route) -> Multicallable:
        channel = self.channel(route.backend)
        codec: dict[str, Callable[..., Any]] = {
            "request_serializer": _serialize,
            "response_deserializer": message_class(route.method.output_type).FromString,
        }
        if route.cardinality is Cardinality.UNARY:
            return channel.unary_unary(route.rpc_path, **codec)
        if route.cardinality is Cardinality.SERVER_STREAMING:
            return channel.unary_stream(route.rpc_path, **codec)
        if route.cardinality is Cardinality.CLIENT_STREAMING:
            return channel.stream_unary(route.rpc_path, **codec)
        return channel.stream_stream(route.rpc_path, **codec)

    async def health(self, backend: str, *, deadline: float = 2.0) -> str:
        """The backend's grpc.health.v1 status name, or the gRPC error code name."""
        stub = health_pb2_grpc.HealthStub(self.channel(backend))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def close(self, grace: float | None = None) -> None:
        await asyncio.gather(*(tunnel.close() for tunnel in self._tunnels.values()))
        channels = (*self._channels.values(), *self._tunnel_channels)
        await asyncio.gather(*(channel.close(grace) for channel in channels))


def _expect(route: Route, cardinality: Cardinality) -> Route:
    if route.cardinality is not cardinality:
        raise TypeError(f"{route.rpc_path} is {route.cardinality.value}, not {cardinality.value}")
    return route


def _tunnel_method(
    channel: grpc.aio.Channel,
) -> grpc.aio.StreamStreamMultiCallable[tunnel_pb2.TunnelRequest, tunnel_pb2.TunnelResponse]:
    return channel.stream_stream(
        TUNNEL_METHOD,
        request_serializer=_serialize,
        response_deserializer=tunnel_pb2.TunnelResponse.FromString,
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _host(address: str) -> str:
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _ip_version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(_host(address)).version
    except ValueError:
        return None


def _is_ip(address: str) -> bool:
    return _ip_version(address) is not None


def _bracketed(address: str) -> str:
    host, _, port = address.rpartition(":")
    return address if host.startswith("[") else f"[{host}]:{port}"
