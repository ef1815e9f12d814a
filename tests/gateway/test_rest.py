"""The REST bridge end to end: HTTP → gateway → a real gRPC backend → HTTP.

The echo backend answers with the request it received, so each test sees exactly what the
gateway transcoded; the Switchboard tests run the real service from services.testing.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from services.testing import running_server
from tests.gateway.conftest import GatewayFactory, echo_settings
from tests.gateway.echo_backend import ECHO_DOMAIN, ECHO_REASON, EchoServer
from tests.gateway.everything import everything_pb2

Client = TestClient[web.Request, web.Application]


async def _json(response: Any, status: int) -> Any:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    return await response.json()


# --- binding shapes ---------------------------------------------------------------------------


async def test_path_variable_and_query(gateway: Client, echo: EchoServer) -> None:
    response = await gateway.get(
        "/v1/everything/a%20b",
        params=[("int32Value", "5"), ("repeatedString", "x"), ("repeatedString", "y")],
    )
    body = await _json(response, 200)
    assert (body["id"], body["int32Value"], body["repeatedString"]) == ("a b", 5, ["x", "y"])
    (request,) = echo.last("GetEverything").requests
    assert request == everything_pb2.Everything(id="a b", int32_value=5, repeated_string=["x", "y"])


async def test_additional_binding_with_enum_path_variable(gateway: Client) -> None:
    body = await _json(await gateway.get("/v1/colors/COLOR_BLUE/everything/z"), 200)
    assert (body["id"], body["color"]) == ("z", "COLOR_BLUE")


async def test_body_star(gateway: Client) -> None:
    sent = {"id": "n1", "nested": {"name": "leaf", "amount": 3}, "labels": {"k": "v"}}
    body = await _json(await gateway.post("/v1/everything", json=sent), 200)
    assert body["nested"]["name"] == "leaf"
    assert body["labels"] == {"k": "v"}


async def test_body_field_with_path_winning(gateway: Client) -> None:
    body = await _json(await gateway.put("/v1/everything/e1/nested", json={"name": "inner"}), 200)
    assert (body["id"], body["nested"]["name"]) == ("e1", "inner")
    body = await _json(await gateway.put("/v1/everything/e1/string", json="plain"), 200)
    assert body["stringValue"] == "plain"
    body = await _json(await gateway.post("/v1/everything/e1/strings", json=["a", "b"]), 200)
    assert body["repeatedString"] == ["a", "b"]


async def test_patch_derives_update_mask(gateway: Client, echo: EchoServer) -> None:
    body = await _json(await gateway.patch("/v1/everything/p1", json={"name": "renamed"}), 200)
    assert body["updateMask"] == "name"
    assert body["nested"]["name"] == "renamed"


async def test_nested_and_multi_segment_variables(gateway: Client) -> None:
    body = await _json(await gateway.get("/v1/shelves/s1/books/b2"), 200)
    assert body["nested"]["name"] == "shelves/s1/books/b2"
    body = await _json(await gateway.get("/v1/files/a/b/c.txt"), 200)
    assert body["path"] == "files/a/b/c.txt"


async def test_custom_verb_and_delete(gateway: Client) -> None:
    body = await _json(await gateway.post("/v1/everything/r1:reset", json={"int32Value": 1}), 200)
    assert (body["id"], body["int32Value"]) == ("r1", 1)
    body = await _json(await gateway.delete("/v1/everything/d1"), 200)
    assert body["id"] == "d1"


async def test_response_body_field(gateway: Client) -> None:
    body = await _json(
        await gateway.get("/v1/everything/g1/nested", params={"nested.name": "q"}), 200
    )
    assert body == {"name": "q", "amount": 0, "kind": "KIND_UNSPECIFIED"}


async def test_http_body_in_and_out(gateway: Client) -> None:
    response = await gateway.post(
        "/v1/uploads/cat.png", data=b"\x89PNG raw", headers={"Content-Type": "image/png"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert await response.read() == b"\x89PNG raw"


# --- errors -----------------------------------------------------------------------------------


async def test_backend_error_with_details(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/everything/x",
        headers={"Grpc-Metadata-Echo-Code": "NOT_FOUND", "Grpc-Metadata-Echo-Message": "gone"},
    )
    body = await _json(response, 404)
    assert (body["code"], body["message"]) == (5, "gone")
    info, bad_request = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["reason"], info["domain"]) == (ECHO_REASON, ECHO_DOMAIN)
    assert bad_request["fieldViolations"] == [{"field": "id", "description": "bad id"}]


@pytest.mark.parametrize(
    ("code", "status"),
    [("FAILED_PRECONDITION", 400), ("ALREADY_EXISTS", 409), ("PERMISSION_DENIED", 403)],
)
async def test_error_status_table(gateway: Client, code: str, status: int) -> None:
    response = await gateway.get("/v1/everything/x", headers={"Grpc-Metadata-Echo-Code": code})
    await _json(response, status)


async def test_unauthenticated_asks_for_a_bearer_token(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/everything/x", headers={"Grpc-Metadata-Echo-Code": "UNAUTHENTICATED"}
    )
    assert (await _json(response, 401))["code"] == 16
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_bad_query_parameter_is_a_bad_request(gateway: Client) -> None:
    body = await _json(await gateway.get("/v1/everything/x", params={"int32Value": "nan"}), 400)
    assert body["code"] == 3
    violation = body["details"][0]["fieldViolations"][0]
    assert "int32" in violation["field"].lower()


async def test_malformed_json_body_is_a_bad_request(gateway: Client) -> None:
    response = await gateway.post(
        "/v1/everything", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (await _json(response, 400))["code"] == 3


async def test_body_over_the_limit_is_413(echo: EchoServer, gateway_for: GatewayFactory) -> None:
    client = await gateway_for(echo_settings(echo, max_body_bytes=64))
    response = await client.post("/v1/everything", json={"stringValue": "x" * 100})
    body = await _json(response, 413)
    assert "64 bytes" in body["message"]
    chunked = await client.post("/v1/everything", data=_chunks(b"x" * 100))
    assert chunked.status == 413
    assert not echo.calls


async def _chunks(data: bytes) -> Any:
    for start in range(0, len(data), 10):
        yield data[start : start + 10]


async def test_grpc_timeout_invalid_is_400_and_stall_is_504(gateway: Client) -> None:
    body = await _json(await gateway.get("/v1/everything/x", headers={"Grpc-Timeout": "soon"}), 400)
    assert "Grpc-Timeout" in body["message"]
    response = await gateway.get(
        "/v1/everything/x", headers={"Grpc-Timeout": "200m", "Grpc-Metadata-Echo-Stall": "1"}
    )
    assert (await _json(response, 504))["code"] == 4


async def test_default_deadline_ends_a_stalled_call(
    echo: EchoServer, gateway_for: GatewayFactory
) -> None:
    client = await gateway_for(echo_settings(echo, unary_timeout=0.3))
    response = await client.get("/v1/everything/x", headers={"Grpc-Metadata-Echo-Stall": "1"})
    assert (await _json(response, 504))["code"] == 4


async def test_backend_down_is_503(gateway_for: GatewayFactory) -> None:
    settings = Settings(backends={"*": ("127.0.0.1:1",)}, modules=("testing.v1.everything_pb2",))
    client = await gateway_for(settings)
    body = await _json(await client.get("/v1/everything/x"), 503)
    assert body["code"] == 14


# --- headers and metadata --------------------------------------------------------------------


async def test_request_headers_become_metadata(gateway: Client, echo: EchoServer) -> None:
    blob = base64.b64encode(b"\x00\x01").decode()
    await gateway.get(
        "/v1/everything/x",
        headers={
            "Authorization": "Bearer abc",
            "Grpc-Metadata-Tenant": "acme",
            "Grpc-Metadata-Blob-Bin": blob,
            "X-Forwarded-For": "203.0.113.7",
            "X-Request-Id": "req-42",
            "X-Not-Allowed": "nope",
        },
    )
    metadata = echo.last("GetEverything").metadata
    assert metadata["authorization"] == "Bearer abc"
    assert metadata["tenant"] == "acme"
    assert metadata["blob-bin"] == b"\x00\x01"
    assert metadata["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert str(metadata["x-forwarded-host"]).startswith("127.0.0.1:")
    assert metadata["x-request-id"] == "req-42"
    assert "x-not-allowed" not in metadata


async def test_allowlisted_header_is_forwarded(
    echo: EchoServer, gateway_for: GatewayFactory
) -> None:
    client = await gateway_for(echo_settings(echo, header_allowlist=("x-tenant",)))
    await client.get("/v1/everything/x", headers={"X-Tenant": "t1"})
    assert echo.last("GetEverything").metadata["x-tenant"] == "t1"


async def test_request_id_is_generated_and_echoed(gateway: Client, echo: EchoServer) -> None:
    response = await gateway.get("/v1/everything/x")
    generated = response.headers["X-Request-Id"]
    assert len(generated) >= 16
    assert echo.last("GetEverything").metadata["x-request-id"] == generated
    response = await gateway.get("/v1/everything/x", headers={"X-Request-Id": "mine"})
    assert response.headers["X-Request-Id"] == "mine"


async def test_generated_request_ids_are_distinct_hex(gateway: Client) -> None:
    ids = [(await gateway.get("/v1/everything/x")).headers["X-Request-Id"] for _ in range(20)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)


async def test_response_metadata_and_trailers_become_headers(gateway: Client) -> None:
    headers = {"Grpc-Metadata-Echo-Initial-Etag": "v1", "Grpc-Metadata-Echo-Trailer-Sum": "s1"}
    response = await gateway.get("/v1/everything/x", headers=headers)
    assert response.headers["Grpc-Metadata-etag"] == "v1"
    assert "Grpc-Trailer-sum" not in response.headers
    response = await gateway.get("/v1/everything/x", headers={**headers, "TE": "trailers"})
    assert response.headers["Grpc-Trailer-sum"] == "s1"


async def test_x_http_code_picks_the_success_status(gateway: Client) -> None:
    response = await gateway.post(
        "/v1/everything", json={"id": "c"}, headers={"Grpc-Metadata-Echo-Http-Code": "201"}
    )
    assert (await _json(response, 201))["id"] == "c"
    assert not any(name.lower().endswith("x-http-code") for name in response.headers)


async def test_error_metadata_is_echoed(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/everything/x",
        headers={"Grpc-Metadata-Echo-Code": "ABORTED", "Grpc-Metadata-Echo-Initial-Retry": "3"},
    )
    await _json(response, 409)
    assert response.headers["Grpc-Metadata-retry"] == "3"


# --- the Switchboard API ---------------------------------------------------------------------


async def test_switchboard_rooms_and_messages(gateway_for: GatewayFactory) -> None:
    async with running_server() as server:
        client = await gateway_for(Settings(backends={"*": (server.address,)}))
        await _switchboard_rooms(client)
        await _switchboard_messages(client)


async def _switchboard_rooms(client: Client) -> None:
    created = await _json(
        await client.post("/v1/rooms", params={"roomId": "lobby"}, json={"displayName": "Lobby"}),
        201,
    )
    assert (created["name"], created["displayName"]) == ("rooms/lobby", "Lobby")
    for room_id in ("b-room", "c-room"):
        await _json(await client.post("/v1/rooms", params={"roomId": room_id}, json={}), 201)
    got = await _json(await client.get("/v1/rooms/lobby"), 200)
    assert got["etag"] == created["etag"]
    page = await _json(await client.get("/v1/rooms", params={"pageSize": "2"}), 200)
    assert [room["name"] for room in page["rooms"]] == ["rooms/b-room", "rooms/c-room"]
    rest = await _json(
        await client.get("/v1/rooms", params={"pageSize": "2", "pageToken": page["nextPageToken"]}),
        200,
    )
    assert [room["name"] for room in rest["rooms"]] == ["rooms/lobby"]
    patched = await _json(await client.patch("/v1/rooms/lobby", json={"description": "hi"}), 200)
    assert (patched["description"], patched["displayName"]) == ("hi", "Lobby")
    assert patched["etag"] != got["etag"]
    stale = await _json(
        await client.patch(
            "/v1/rooms/lobby",
            params={"updateMask": "description"},
            json={"description": "x", "etag": got["etag"]},
        ),
        400,
    )
    assert stale["code"] == 9  # FAILED_PRECONDITION
    assert stale["details"][0]["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
    conditional = await client.patch(
        "/v1/rooms/lobby",
        params={"updateMask": "description"},
        json={"description": "ok", "etag": patched["etag"]},
    )
    assert (await _json(conditional, 200))["description"] == "ok"
    missing = await _json(await client.get("/v1/rooms/nope"), 404)
    assert missing["code"] == 5
    await _json(await client.delete("/v1/rooms/c-room"), 200)
    await _json(await client.get("/v1/rooms/c-room"), 404)


async def _switchboard_messages(client: Client) -> None:
    posted = await _json(await client.post("/v1/rooms/lobby/messages", json={"text": "hello"}), 201)
    assert (posted["name"].startswith("rooms/lobby/messages/"), posted["offset"]) == (True, "1")
    await _json(await client.post("/v1/rooms/lobby/messages", json={"text": "again"}), 201)
    listed = await _json(await client.get("/v1/rooms/lobby/messages"), 200)
    assert sorted(message["text"] for message in listed["messages"]) == ["again", "hello"]
    absent = await _json(await client.post("/v1/rooms/nope/messages", json={"text": "x"}), 404)
    assert absent["code"] == 5
