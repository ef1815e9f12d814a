"""The OpenAPI document: valid, complete, true to the route table and to what the gateway prints.

Two APIs are rendered: Switchboard's own protos (compiled with comments, as the committed
document is) and the ``testing.v1`` Everything API, which has every field type, additional
bindings, body variants, HttpBody and every cardinality. Responses of live gateways (in front of
the real service and of the echo backend) are validated against the document's schemas.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import descriptor_pb2
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway.comments import Comments
from gateway.config import Settings
from gateway.descriptors import DEFAULT_MODULES, from_modules
from gateway.httprule import RouteTable
from gateway.openapi import dumps, operation_ids, render_openapi
from gateway.openapi_cli import ASYNCAPI_FILE, OPENAPI_FILE, render, route_table_of
from gateway.routes import Route, build_route_table
from gateway.transcode import JsonOptions
from services.testing import running_server
from switchboard.gateway.v1 import options_pb2
from tests.gateway.conftest import GatewayFactory, echo_settings
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import DESCRIPTOR_SET
from tests.gateway.stream_gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
Document = dict[str, Any]


@functools.cache
def switchboard_texts() -> tuple[str, str]:
    documents = render(ROOT / "proto")
    return documents.openapi, documents.asyncapi


def switchboard() -> Document:
    document: Document = json.loads(switchboard_texts()[0])
    return document


def table_of(descriptor_set: bytes) -> RouteTable[Route]:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "api.binpb"
        path.write_bytes(descriptor_set)
        return route_table_of(path)


def everything_routes() -> list[Route]:
    return [route for _, _, route in table_of(DESCRIPTOR_SET).routes()]


def render_everything(descriptor_set: bytes = DESCRIPTOR_SET, **options: Any) -> Document:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    table = table_of(descriptor_set)
    return render_openapi(table, comments=Comments.from_files(files), **options)


@functools.cache
def everything_text() -> str:
    return dumps(render_everything())


def everything() -> Document:
    document: Document = json.loads(everything_text())
    return document


def operations(document: Document) -> Iterator[tuple[str, str, Document]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def operation(document: Document, operation_id: str) -> tuple[str, str, Document]:
    for path, method, found in operations(document):
        if found["operationId"] == operation_id:
            return path, method, found
    raise AssertionError(f"no operation {operation_id}")


def schema(document: Document, name: str) -> Document:
    found: Document = document["components"]["schemas"][name]
    return found


def validator(document: Document, inline: Document) -> Draft202012Validator:
    """A validator for ``inline`` whose ``#/components/...`` references reach the document."""
    root = {**inline, "components": document["components"]}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(document: Document, inline: Document, instance: Any) -> None:
    errors = sorted(validator(document, inline).iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def response_schema(document: Document, operation_id: str, status: str, media: str) -> Document:
    _, _, found = operation(document, operation_id)
    response = found["responses"][status]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    inline: Document = response["content"][media]["schema"]
    return inline


# -- validity and completeness -----------------------------------------------------------------


def test_documents_are_valid_openapi_3_1() -> None:
    validate(switchboard())
    validate(everything())
    assert switchboard()["openapi"] == "3.1.0"


def test_every_route_of_the_table_has_its_operation() -> None:
    routes = everything_routes()
    document = everything()
    for route, operation_id in zip(routes, operation_ids(routes), strict=True):
        _, method, found = operation(document, operation_id)
        assert method == route.http_method.lower()
        assert found["x-grpc"]["method"] == route.rpc_path
        assert found["x-grpc"]["httpRule"] == f"{route.http_method} {route.template}"
    assert sum(1 for _ in operations(document)) == len(routes)


def test_switchboard_operations_are_named_after_service_and_method() -> None:
    ids = {found["operationId"] for _, _, found in operations(switchboard())}
    assert {"RoomService_CreateRoom", "ChatService_Subscribe", "PresenceService_ListMembers"} <= ids
    assert len(ids) == 13


def test_additional_bindings_get_numbered_operation_ids() -> None:
    document = everything()
    assert operation(document, "EverythingService_GetEverything")[0] == "/v1/everything/{id}"
    assert operation(document, "EverythingService_GetEverything_1")[0] == "/v2/everything/{id}"
    path, _, third = operation(document, "EverythingService_GetEverything_2")
    assert path == "/v1/colors/{color}/everything/{id}"
    color = next(p for p in third["parameters"] if p["name"] == "color")
    assert color["schema"] == {"$ref": "#/components/schemas/Color"}


def test_committed_documents_equal_a_fresh_render() -> None:
    openapi, asyncapi = switchboard_texts()
    assert (ROOT / "openapi" / OPENAPI_FILE).read_text(encoding="utf-8") == openapi
    assert (ROOT / "openapi" / ASYNCAPI_FILE).read_text(encoding="utf-8") == asyncapi


def test_rendering_is_deterministic_with_sorted_keys() -> None:
    text = dumps(render_everything())
    assert text == everything_text()
    assert text.endswith("}\n")
    document = json.loads(text)
    assert list(document) == sorted(document)


# -- paths and parameters ----------------------------------------------------------------------


def test_a_resource_name_variable_is_written_out_segment_by_segment() -> None:
    path, _, found = operation(switchboard(), "ChatService_DeleteMessage")
    assert path == "/v1/rooms/{room}/messages/{message}"
    room, message = found["parameters"]
    assert (room["name"], room["in"], room["required"]) == ("room", "path", True)
    assert room["x-field-path"] == message["x-field-path"] == "name"
    assert room["x-field-template"] == "rooms/{room}/messages/{message}"
    assert room["schema"]["pattern"] == "^[^/]+$"
    assert operation(switchboard(), "RoomService_DeleteRoom")[0] == "/v1/rooms/{room}"


def test_nested_and_multi_segment_path_fields() -> None:
    path, _, found = operation(everything(), "EverythingService_GetByNestedName")
    assert path.startswith("/v1/shelves/{")
    assert path.endswith("}/books/{book}")
    assert {p["x-field-path"] for p in found["parameters"] if p["in"] == "path"} == {"nested.name"}
    path, _, found = operation(everything(), "EverythingService_GetFile")
    assert path == "/v1/files/{file}"
    assert found["parameters"][0]["schema"]["pattern"] == "^.*$"
    assert operation(everything(), "EverythingService_ResetEverything")[0] == (
        "/v1/everything/{id}:reset"
    )


def test_query_parameters_cover_every_unbound_field() -> None:
    _, _, found = operation(everything(), "EverythingService_GetEverything")
    query = {p["name"]: p for p in found["parameters"] if p["in"] == "query"}
    assert "id" not in query  # bound by the path
    assert query["int64Value"]["schema"]["type"] == "string"
    assert query["nested.name"]["schema"] == {"type": "string"}
    assert query["nested.kind"]["schema"] == {"$ref": "#/components/schemas/Nested.Kind"}
    assert query["repeatedString"]["style"] == "form"
    assert query["repeatedString"]["explode"]
    assert query["labels"]["style"] == "deepObject"
    assert query["timestamp"]["schema"]["format"] == "date-time"
    assert query["doubleWrapper"]["schema"]["oneOf"][0]["type"] == "number"
    assert query["int64Wrapper"]["schema"]["type"] == "string"
    assert "customJSONName" in query
    for unwritable in ("nestedByName", "repeatedNested", "structValue", "any", "nested.child"):
        assert unwritable not in query, unwritable


def test_output_only_fields_are_not_query_parameters() -> None:
    _, _, found = operation(switchboard(), "ChatService_ListMessages")
    names = [p["name"] for p in found["parameters"]]
    assert names == ["room", "pageSize", "pageToken", "startOffset", "direction"]
    _, _, converse = operation(switchboard(), "ChatService_Converse")
    assert "post.message.sender" not in [p["name"] for p in converse["parameters"]]


def test_sse_routes_document_the_resume_cursor() -> None:
    _, _, found = operation(switchboard(), "ChatService_Subscribe")
    by_name = {p["name"]: p for p in found["parameters"]}
    assert by_name["Last-Event-ID"]["in"] == "header"
    assert by_name["last_event_id"]["in"] == "query"


# -- request bodies ------------------------------------------------------------------------------


def test_path_bound_fields_are_absent_from_bodies() -> None:
    document = switchboard()
    body = operation(document, "ChatService_ImportMessages")[2]["requestBody"]
    ref = body["content"]["application/x-ndjson"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ChatService_ImportMessagesBody"
    assert "parent" not in schema(document, "ChatService_ImportMessagesBody")["properties"]
    update = schema(document, "RoomService_UpdateRoomBody")
    assert "name" not in update["properties"]
    assert "displayName" in update["properties"]
    reset = schema(everything(), "EverythingService_ResetEverythingBody")
    assert "id" not in reset["properties"]
    assert "int64Value" in reset["properties"]
    create = operation(everything(), "EverythingService_CreateEverything")[2]["requestBody"]
    assert create["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Everything"
    }


def test_body_field_variants() -> None:
    document = everything()

    def body_of(operation_id: str) -> Document:
        content = operation(document, operation_id)[2]["requestBody"]["content"]
        return dict(next(iter(content.values()))["schema"])

    assert body_of("EverythingService_SetString")["type"] == "string"
    assert body_of("EverythingService_AppendStrings")["type"] == "array"
    assert body_of("EverythingService_SetNested")["$ref"] == "#/components/schemas/Nested"
    upload = operation(document, "EverythingService_UploadFile")[2]
    assert "*/*" in upload["requestBody"]["content"]
    assert "*/*" in upload["responses"]["200"]["content"]
    _, _, create_room = operation(switchboard(), "RoomService_CreateRoom")
    assert create_room["requestBody"]["required"] is True
    assert create_room["parameters"][0] == {
        "name": "roomId",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": create_room["parameters"][0]["description"],
    }


# -- schemas -------------------------------------------------------------------------------------


def test_scalars_follow_the_proto3_json_mapping() -> None:
    properties = schema(everything(), "Everything")["properties"]
    assert properties["int64Value"] == {
        "type": "string",
        "format": "int64",
        "pattern": "^-?[0-9]+$",
    }
    assert properties["uint64Value"]["format"] == "uint64"
    assert properties["fixed64Value"]["format"] == "uint64"
    assert properties["int32Value"]["type"] == "integer"
    assert properties["uint32Value"]["minimum"] == 0
    assert properties["bytesValue"]["format"] == "byte"
    assert properties["doubleValue"]["oneOf"][1]["enum"] == ["NaN", "Infinity", "-Infinity"]
    assert properties["color"] == {"$ref": "#/components/schemas/Color"}
    assert schema(everything(), "Color")["enum"][1] == "COLOR_RED"
    assert properties["customJSONName"]["type"] == "string"


def test_well_known_types_and_wrappers() -> None:
    properties = schema(everything(), "Everything")["properties"]
    assert properties["timestamp"]["format"] == "date-time"
    assert "pattern" in properties["duration"]
    assert properties["updateMask"]["type"] == "string"
    assert properties["int64Wrapper"]["type"] == ["string", "null"]
    assert properties["boolWrapper"]["type"] == ["boolean", "null"]
    assert {"type": "null"} in properties["floatWrapper"]["anyOf"]
    assert properties["structValue"]["type"] == "object"
    assert properties["listValue"]["type"] == "array"
    assert properties["any"]["required"] == ["@type"]
    assert properties["empty"]["additionalProperties"] is False


def test_maps_repeated_oneofs_and_recursion() -> None:
    document = everything()
    properties = schema(document, "Everything")["properties"]
    assert properties["labels"]["additionalProperties"] == {"type": "string"}
    assert properties["namesByNumber"]["propertyNames"] == {"pattern": "^-?[0-9]+$"}
    assert properties["nestedByName"]["additionalProperties"]["$ref"].endswith("/Nested")
    assert properties["repeatedInt64"]["items"]["format"] == "int64"
    assert schema(document, "Everything")["x-oneof"] == {
        "choice": ["choiceText", "choiceNumber", "choiceNested"]
    }
    recursive = schema(document, "Recursive")["properties"]
    assert recursive["next"] == {"$ref": "#/components/schemas/Recursive"}


def test_field_behavior_and_comments() -> None:
    document = switchboard()
    message = schema(document, "Message")
    assert message["required"] == ["text"]
    assert message["properties"]["text"]["minLength"] == 1  # REQUIRED: not the empty default
    assert message["properties"]["sender"]["readOnly"] is True
    assert message["description"] == "A message in a room."
    assert message["properties"]["text"]["description"].startswith("The text, 1 to")
    assert schema(document, "Room")["properties"]["createTime"]["readOnly"] is True
    event = schema(document, "RoomEvent")
    assert "messagePosted" in event["x-oneof"]["kind"]
    assert "oneof `kind`" in event["description"]
    _, _, create = operation(document, "RoomService_CreateRoom")
    assert create["summary"] == "Creates a room with a name chosen by the client (`room_id`)."
    tags = {tag["name"]: tag.get("description") for tag in document["tags"]}
    assert tags["RoomService"] == "Manages rooms."
    assert schema(document, "Status")["properties"]["details"]["type"] == "array"


def test_json_options_change_the_names_and_enums() -> None:
    document = render_everything(json_options=JsonOptions(use_proto_names=True, enums_as_ints=True))
    assert "int64_value" in schema(document, "Everything")["properties"]
    assert schema(document, "Color") == {"type": "integer", "format": "int32", "enum": [0, 1, 2, 3]}
    _, _, found = operation(document, "EverythingService_GetEverything")
    assert "nested.name" in [p["name"] for p in found["parameters"]]
    assert "repeated_string" in [p["name"] for p in found["parameters"]]


# -- responses and security --------------------------------------------------------------------


def test_responses_name_the_statuses_the_gateway_returns() -> None:
    document = switchboard()
    _, _, post = operation(document, "ChatService_PostMessage")
    assert {"200", "201", "400", "401", "403", "404", "409", "413", "429", "default"} <= set(
        post["responses"]
    )
    _, _, get = operation(document, "RoomService_GetRoom")
    assert "201" not in get["responses"]
    assert "413" not in get["responses"]
    assert get["responses"]["404"] == {"$ref": "#/components/responses/NotFound"}
    error = document["components"]["responses"]["NotFound"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/Status"}
    _, _, upload = operation(document, "ChatService_ImportMessages")
    assert "415" in upload["responses"]
    _, _, converse = operation(document, "ChatService_Converse")
    assert {"101", "426"} <= set(converse["responses"])


def test_streaming_operations_describe_sse_ndjson_and_websocket() -> None:
    _, _, subscribe = operation(switchboard(), "ChatService_Subscribe")
    content = subscribe["responses"]["200"]["content"]
    assert set(content) == {"text/event-stream", "application/x-ndjson"}
    events = {event["name"] for event in subscribe["x-sse"]["events"]}
    assert {"subscribed", "message_posted", "typing", "message", "error"} <= events
    assert subscribe["x-sse"]["idField"] == "id"
    socket = subscribe["x-websocket"]
    assert socket["subprotocols"] == ["switchboard.grpc.json.v1", "switchboard.grpc.proto.v1"]
    assert socket["closeCodes"]["1008"].startswith("UNAUTHENTICATED")
    _, _, converse = operation(switchboard(), "ChatService_Converse")
    client = converse["x-websocket"]["clientFrame"]["oneOf"][0]["properties"]["message"]
    assert client == {"$ref": "#/components/schemas/ConverseRequest"}


def test_security_follows_the_auth_rules() -> None:
    document = switchboard()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    _, _, create = operation(document, "RoomService_CreateRoom")
    assert create["security"] == [{"bearerAuth": []}]
    assert create["x-required-permissions"] == ["rooms.create"]

    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if method.name == "GetEverything":
                    method.options.Extensions[options_pb2.auth].public = True
    public = render_everything(files.SerializeToString())
    assert operation(public, "EverythingService_GetEverything")[2]["security"] == []
    assert "401" not in operation(public, "EverythingService_GetEverything")[2]["responses"]
    assert operation(public, "EverythingService_SetString")[2]["security"] == [{"bearerAuth": []}]


# -- the schemas against what live gateways print ------------------------------------------------


async def test_switchboard_responses_match_their_schemas() -> None:
    document = switchboard()
    async with running_server() as backend:
        settings = Settings(backends={"*": (backend.address,)})
        async with running_gateway(settings) as gateway:
            session = gateway.session

            async def check(
                method: str, path: str, operation_id: str, status: int, **kwargs: Any
            ) -> Any:
                async with session.request(method, gateway.url(path), **kwargs) as response:
                    assert response.status == status, await response.text()
                    body = await response.json()
                inline = response_schema(document, operation_id, str(status), "application/json")
                assert_valid(document, inline, body)
                return body

            body = {"displayName": "Schemas", "labels": {"k": "v"}}
            await check(
                "POST", "/v1/rooms?roomId=schemas", "RoomService_CreateRoom", 201, json=body
            )
            await check("GET", "/v1/rooms/schemas", "RoomService_GetRoom", 200)
            for text in ("a", "b", "c"):
                await check(
                    "POST",
                    "/v1/rooms/schemas/messages",
                    "ChatService_PostMessage",
                    201,
                    json={"text": text, "attributes": {"n": text}},
                )
            await check(
                "GET", "/v1/rooms/schemas/messages?pageSize=2", "ChatService_ListMessages", 200
            )
            await check("GET", "/v1/rooms", "RoomService_ListRooms", 200)
            await check("GET", "/v1/rooms/schemas/members", "PresenceService_ListMembers", 200)
            await check("GET", "/v1/rooms/nowhere", "RoomService_GetRoom", 404)
            await check(
                "PATCH",
                "/v1/rooms/schemas?updateMask=displayName",
                "RoomService_UpdateRoom",
                200,
                json={"displayName": "Renamed"},
            )
            await _check_stream(document, session, gateway.url("/v1/rooms/schemas:subscribe"))


async def _check_stream(document: Document, session: aiohttp.ClientSession, url: str) -> None:
    sse = response_schema(document, "ChatService_Subscribe", "200", "text/event-stream")
    headers = {"Accept": "text/event-stream"}
    async with session.get(url, headers=headers) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                assert_valid(document, sse, json.loads(line[len("data: ") :]))
                break
    ndjson = response_schema(document, "ChatService_Subscribe", "200", "application/x-ndjson")
    async with session.get(url, headers={"Accept": "application/x-ndjson"}) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        assert_valid(document, ndjson, json.loads(await response.content.readline()))


FULL_EVERYTHING = {
    "doubleValue": 1.5,
    "floatValue": "NaN",
    "int32Value": -3,
    "int64Value": "-9007199254740993",
    "uint32Value": 4000000000,
    "uint64Value": "18446744073709551615",
    "sint32Value": -1,
    "sint64Value": "-2",
    "fixed32Value": 7,
    "fixed64Value": "8",
    "sfixed32Value": -9,
    "sfixed64Value": "-10",
    "boolValue": True,
    "stringValue": "text",
    "bytesValue": "aGVsbG8=",
    "optionalString": "",
    "color": "COLOR_BLUE",
    "kind": "KIND_LEAF",
    "nested": {"name": "n", "amount": 2, "kind": "KIND_BRANCH", "child": {"name": "c"}},
    "recursive": {"label": "r", "next": {"label": "s"}, "children": [{"label": "t"}]},
    "repeatedString": ["a", "b"],
    "repeatedInt64": ["1", "-2"],
    "repeatedColor": ["COLOR_RED"],
    "repeatedBytes": ["AA=="],
    "repeatedNested": [{"name": "x"}],
    "labels": {"a": "b"},
    "nestedByName": {"k": {"name": "v"}},
    "namesByNumber": {"7": "seven"},
    "choiceNested": {"name": "chosen"},
    "timestamp": "2024-01-02T03:04:05.678Z",
    "duration": "1.500s",
    "updateMask": "int64Value,nested.name",
    "doubleWrapper": 2.5,
    "floatWrapper": 1.25,
    "int64Wrapper": "5",
    "uint64Wrapper": "6",
    "int32Wrapper": 7,
    "uint32Wrapper": 8,
    "boolWrapper": False,
    "stringWrapper": "w",
    "bytesWrapper": "AQI=",
    "structValue": {"a": [1, {"b": None}]},
    "value": [True, "x"],
    "listValue": [1, "two"],
    "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"},
    "empty": {},
    "repeatedTimestamp": ["2024-01-02T03:04:05Z"],
    "path": "files/a",
    "customJSONName": "custom",
}


@pytest.mark.parametrize("options", [JsonOptions(), JsonOptions(emit_unpopulated=False)])
async def test_everything_as_the_gateway_prints_it_matches_the_schema(
    echo: EchoServer, gateway_for: GatewayFactory, options: JsonOptions
) -> None:
    document = everything()
    client = await gateway_for(echo_settings(echo, json=options))
    inline = response_schema(
        document, "EverythingService_CreateEverything", "200", "application/json"
    )
    for body in (FULL_EVERYTHING, {}, {"choiceText": "t", "value": None, "int64Wrapper": "0"}):
        response = await client.post("/v1/everything", json=body)
        assert response.status == 200, await response.text()
        printed = await response.json()
        assert_valid(document, inline, printed)
    nested = response_schema(document, "EverythingService_GetNested", "200", "application/json")
    response = await client.get("/v1/everything/x/nested?nested.name=n&nested.amount=3")
    assert_valid(document, nested, await response.json())
    error = await client.get("/v1/everything/x?int32Value=nope")
    assert error.status == 400
    assert_valid(
        document,
        response_schema(document, "EverythingService_GetEverything", "400", "application/json"),
        await error.json(),
    )


def test_an_invalid_instance_is_rejected_by_the_schemas() -> None:
    document = everything()
    inline = {"$ref": "#/components/schemas/Everything"}
    for bad in ({"int64Value": 5}, {"color": "PURPLE"}, {"timestamp": 3}, {"labels": {"a": 1}}):
        assert list(validator(document, inline).iter_errors(bad)), bad


def test_the_generated_modules_give_the_same_operations_without_comments() -> None:
    """What a gateway started from the default modules can serve at run time."""
    table = build_route_table(from_modules(DEFAULT_MODULES), backend_of=lambda _s: "backend")
    document = render_openapi(table)
    validate(document)
    committed = switchboard()
    assert document["paths"].keys() == committed["paths"].keys()
    assert document["components"]["schemas"].keys() == committed["components"]["schemas"].keys()
    assert "description" not in document["components"]["schemas"]["Room"]
