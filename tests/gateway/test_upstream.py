"""Channels, multicallables, deadlines and health checks against real echo backends."""

from __future__ import annotations

import grpc
import pytest

from gateway.routes import Cardinality, Route, build_route_table
from gateway.upstream import DeadlinePolicy, Upstream, channel_target
from tests.gateway.conftest import SERVICES
from tests.gateway.echo_backend import running_echo
from tests.gateway.everything import everything_pb2


def _routes(backend: str) -> dict[str, Route]:
    table = build_route_table(SERVICES, backend_of=lambda _: backend)
    return {route.method.name: route for _, _, route in table.routes()}


def test_channel_targets() -> None:
    assert channel_target(["127.0.0.1:1"]) == "ipv4:127.0.0.1:1"
    assert channel_target(["127.0.0.1:1", "10.0.0.2:2"]) == "ipv4:127.0.0.1:1,10.0.0.2:2"
    assert channel_target(["[::1]:1", "::2:2"]) == "ipv6:[::1]:1,[::2]:2"
    assert channel_target(["svc.internal:50051"]) == "dns:///svc.internal:50051"
    with pytest.raises(ValueError, match="mixed"):
        channel_target(["127.0.0.1:1", "[::1]:2"])


def test_deadline_policy() -> None:
    policy = DeadlinePolicy(unary=30.0, streaming=None)
    assert policy.timeout_for(Cardinality.UNARY, None) == 30.0
    assert policy.timeout_for(Cardinality.UNARY, 0.5) == 0.5
    assert policy.timeout_for(Cardinality.SERVER_STREAMING, None) is None
    assert policy.timeout_for(Cardinality.BIDI_STREAMING, 2.0) == 2.0


async def test_unary_call_through_a_built_multicallable() -> None:
    async with running_echo(SERVICES) as echo:
        upstream = await Upstream.connect({"echo": (echo.address,)})
        try:
            route = _routes("echo")["GetEverything"]
            call = upstream.unary_unary(route)
            assert upstream.unary_unary(route) is call  # cached per method
            reply = await call(everything_pb2.Everything(id="x"), timeout=5)
            assert reply == everything_pb2.Everything(id="x")
            with pytest.raises(TypeError, match="unary"):
                upstream.unary_stream(route)
        finally:
            await upstream.close()


async def test_several_addresses_are_balanced_round_robin() -> None:
    async with running_echo(SERVICES) as first, running_echo(SERVICES) as second:
        upstream = await Upstream.connect({"pair": (first.address, second.address)})
        try:
            call = upstream.unary_unary(_routes("pair")["GetEverything"])
            for number in range(20):
                await call(everything_pb2.Everything(id=str(number)), timeout=5)
        finally:
            await upstream.close()
    assert len(first.calls) >= 5
    assert len(second.calls) >= 5
    assert len(first.calls) + len(second.calls) == 20


async def test_health_reports_serving_status_and_failures() -> None:
    async with running_echo(SERVICES) as echo:
        upstream = await Upstream.connect({"up": (echo.address,), "down": ("127.0.0.1:1",)})
        try:
            assert await upstream.health("up") == "SERVING"
            await echo.health.set("", 2)  # NOT_SERVING
            assert await upstream.health("up") == "NOT_SERVING"
            assert await upstream.health("down", deadline=1.0) in {
                "UNAVAILABLE",
                "DEADLINE_EXCEEDED",
            }
        finally:
            await upstream.close()


async def test_down_backend_fails_with_unavailable() -> None:
    upstream = await Upstream.connect({"down": ("127.0.0.1:1",)})
    try:
        call = upstream.unary_unary(_routes("down")["GetEverything"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(everything_pb2.Everything(id="x"), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await upstream.close()
