"""The application: descriptor sources, routing errors, CORS, health, dispatch by cardinality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.api import http_pb2
from yarl import URL

from gateway.app import ROUTES, build_app
from gateway.bridges import BRIDGES, CallContext
from gateway.config import Settings
from gateway.routes import Cardinality, RouteError
from tests.gateway.conftest import (
    SERVICES,
    GatewayFactory,
    echo_settings,
    edited_descriptor_set,
)
from tests.gateway.echo_backend import EchoServer, running_echo
from tests.gateway.everything import everything_pb2

Client = TestClient[web.Request, web.Application]


async def _status_json(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) == {"code", "message", "details"}
    return body


# --- descriptor sources -----------------------------------------------------------------------


async def test_descriptor_set_source(
    echo: EchoServer, gateway_for: GatewayFactory, descriptor_set_file: Path
) -> None:
    client = await gateway_for(
        Settings(backends={"*": (echo.address,)}, descriptor_set=descriptor_set_file)
    )
    response = await client.get("/v1/everything/ds", params={"nested.name": "n"})
    assert response.status == 200
    assert (await response.json())["nested"]["name"] == "n"


async def test_reflection_source(echo: EchoServer, gateway_for: GatewayFactory) -> None:
    client = await gateway_for(Settings(backends={"*": (echo.address,)}, reflect=True))
    response = await client.post("/v1/everything", json={"id": "via-reflection"})
    assert response.status == 200
    assert (await response.json())["id"] == "via-reflection"
    assert echo.last("CreateEverything").requests == (
        everything_pb2.Everything(id="via-reflection"),
    )


async def test_auto_map_exposes_unannotated_methods(
    echo: EchoServer, gateway_for: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "edited.binpb"
    path.write_bytes(edited_descriptor_set("DeleteEverything", None))
    rpc = "/testing.v1.EverythingService/DeleteEverything"
    hidden = await gateway_for(Settings(backends={"*": (echo.address,)}, descriptor_set=path))
    assert (await hidden.post(rpc, json={})).status == 404
    mapped = await gateway_for(
        Settings(backends={"*": (echo.address,)}, descriptor_set=path, auto_map=True)
    )
    response = await mapped.post(rpc, json={"id": "auto"})
    assert response.status == 200
    assert (await response.json())["id"] == "auto"


async def test_invalid_template_fails_startup(echo: EchoServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.binpb"
    path.write_bytes(edited_descriptor_set("GetEverything", http_pb2.HttpRule(get="/v1/{id")))
    app = build_app(Settings(backends={"*": (echo.address,)}, descriptor_set=path))
    runner = web.AppRunner(app)
    with pytest.raises(RouteError, match=r"GetEverything.*/v1/\{id"):
        await runner.setup()
    await runner.cleanup()


async def test_services_are_routed_to_their_own_backends(gateway_for: GatewayFactory) -> None:
    async with running_echo(SERVICES) as chosen, running_echo(SERVICES) as default:
        settings = Settings(
            backends={"testing.v1.EverythingService": (chosen.address,), "*": (default.address,)},
            modules=("testing.v1.everything_pb2",),
        )
        client = await gateway_for(settings)
        assert (await client.get("/v1/everything/x")).status == 200
    assert len(chosen.calls) == 1
    assert not default.calls


async def test_several_addresses_share_the_traffic(gateway_for: GatewayFactory) -> None:
    async with running_echo(SERVICES) as first, running_echo(SERVICES) as second:
        settings = Settings(
            backends={"*": (first.address, second.address)},
            modules=("testing.v1.everything_pb2",),
        )
        client = await gateway_for(settings)
        for number in range(12):
            assert (await client.get(f"/v1/everything/{number}")).status == 200
    assert first.calls
    assert second.calls
    assert len(first.calls) + len(second.calls) == 12


# --- routing errors ---------------------------------------------------------------------------


async def test_unknown_path_is_404_status_json(gateway: Client) -> None:
    body = await _status_json(await gateway.get("/v9/nothing"), 404)
    assert body["code"] == 5
    assert "/v9/nothing" in body["message"]


async def test_wrong_method_is_405_with_allow(gateway: Client) -> None:
    response = await gateway.put("/v1/everything/x")
    body = await _status_json(response, 405)
    assert response.headers["Allow"] == "DELETE, GET, PATCH"
    assert "PUT" in body["message"]


async def test_an_encoded_newline_in_the_path_is_routed(gateway: Client, echo: EchoServer) -> None:
    base = gateway.make_url("/")
    response = await gateway.session.get(URL(f"{base}v1/everything/a%0Ab", encoded=True))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert echo.last("GetEverything").requests[0].id == "a\nb"


async def test_bad_percent_escape_is_400(gateway: Client) -> None:
    base = gateway.make_url("/")
    raw = URL(f"{base}v1/everything/%zz", encoded=True)
    body = await _status_json(await gateway.session.get(raw), 400)
    assert body["code"] == 3


async def test_invalid_metadata_header_is_400(gateway: Client) -> None:
    response = await gateway.get("/v1/everything/x", headers={"Grpc-Metadata-Grpc-Status": "0"})
    body = await _status_json(response, 400)
    assert "Grpc-Metadata-Grpc-Status" in body["message"]


async def test_streaming_without_a_bridge_is_501(
    gateway: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(BRIDGES, Cardinality.SERVER_STREAMING, raising=False)
    body = await _status_json(await gateway.get("/v1/everything/x:stream"), 501)
    assert body["code"] == 12
    assert "StreamEverything" in body["message"]


async def test_websocket_get_reaches_a_streaming_method_bound_to_post(
    gateway: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[CallContext] = []

    async def fake_bridge(ctx: CallContext) -> web.StreamResponse:
        seen.append(ctx)
        return web.json_response({"rpc": ctx.route.rpc_path})

    monkeypatch.setitem(BRIDGES, Cardinality.BIDI_STREAMING, fake_bridge)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    response = await gateway.get("/v1/everything:chat", headers=upgrade)
    assert await response.json() == {"rpc": "/testing.v1.EverythingService/ChatEverything"}
    assert seen[0].timeout is None  # streams have no default deadline
    plain = await gateway.get("/v1/everything:chat")
    assert plain.status == 405


# --- CORS -------------------------------------------------------------------------------------


async def test_cors_allowed_origin(echo: EchoServer, gateway_for: GatewayFactory) -> None:
    client = await gateway_for(echo_settings(echo, cors_origins=("https://app.example",)))
    response = await client.get("/v1/everything/x", headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-Id" in response.headers["Access-Control-Expose-Headers"]
    preflight = await client.options(
        "/v1/everything/x",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type, grpc-timeout",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert preflight.headers["Access-Control-Allow-Methods"] == "PATCH"
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type, grpc-timeout"


async def test_cors_disallowed_origin_gets_no_cors_headers(
    echo: EchoServer, gateway_for: GatewayFactory
) -> None:
    client = await gateway_for(echo_settings(echo, cors_origins=("https://app.example",)))
    response = await client.get("/v1/everything/x", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await client.options(
        "/v1/everything/x",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    await _status_json(preflight, 403)
    assert "Access-Control-Allow-Origin" not in preflight.headers


# --- health -----------------------------------------------------------------------------------


async def test_healthz_and_readyz(gateway: Client, echo: EchoServer) -> None:
    assert (await gateway.get("/healthz")).status == 200
    ready = await gateway.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["backends"] == {echo.address: "SERVING"}
    await echo.health.set("", 2)  # NOT_SERVING
    body = await _status_json(await gateway.get("/readyz"), 503)
    assert f"{echo.address} is NOT_SERVING" in body["message"]


async def test_readyz_names_a_down_backend(gateway_for: GatewayFactory) -> None:
    settings = Settings(backends={"*": ("127.0.0.1:1",)}, modules=("testing.v1.everything_pb2",))
    client = await gateway_for(settings)
    assert (await client.get("/healthz")).status == 200
    body = await _status_json(await client.get("/readyz"), 503)
    assert "127.0.0.1:1 is" in body["message"]


async def test_route_table_is_app_state(echo: EchoServer) -> None:
    app = build_app(echo_settings(echo))
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        rpcs = {route.rpc_path for _, _, route in app[ROUTES].routes()}
        assert "/testing.v1.EverythingService/GetEverything" in rpcs
    finally:
        await client.close()


def test_public_surface_is_honest() -> None:
    import gateway

    assert sorted(gateway.__all__) == sorted(set(gateway.__all__))
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None, name
    with pytest.raises(AttributeError, match="nothing_here"):
        _ = gateway.nothing_here


async def test_a_bug_answers_500_status_json(
    gateway: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_bridge(ctx: CallContext) -> web.StreamResponse:
        raise RuntimeError("boom")

    monkeypatch.setitem(BRIDGES, Cardinality.UNARY, broken_bridge)
    response = await gateway.get("/v1/everything/x", headers={"X-Request-Id": "bug-1"})
    body = await _status_json(response, 500)
    assert body["code"] == 13
    assert "bug-1" in body["message"]
    assert "boom" in caplog.text
