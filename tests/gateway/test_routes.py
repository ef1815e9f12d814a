"""The route table compiled from descriptors: bindings, options, and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.api import http_pb2
from google.protobuf.descriptor import ServiceDescriptor

from gateway.descriptors import from_descriptor_set, from_modules
from gateway.httprule import Matched, MethodNotAllowed, RouteTable
from gateway.routes import Cardinality, Route, RouteError, build_route_table, websocket_table
from tests.gateway.conftest import SERVICES, edited_descriptor_set


def _table(
    services: tuple[ServiceDescriptor, ...] = SERVICES, *, auto_map: bool = False
) -> RouteTable[Route]:
    return build_route_table(services, backend_of=lambda s: f"be:{s.name}", auto_map=auto_map)


def _match(table: RouteTable[Route], method: str, path: str) -> Route:
    found = table.match(method, path)
    assert isinstance(found, Matched), found
    return found.target


def _edited(
    tmp_path: Path, method: str, rule: http_pb2.HttpRule | None
) -> tuple[ServiceDescriptor, ...]:
    path = tmp_path / "edited.binpb"
    path.write_bytes(edited_descriptor_set(method, rule))
    return from_descriptor_set(path)


def test_every_binding_is_routed_with_its_method_and_fields() -> None:
    table = _table()
    route = _match(table, "GET", "/v1/everything/abc/nested")
    assert route.rpc_path == "/testing.v1.EverythingService/GetNested"
    assert (route.http_method, route.body, route.response_body) == ("GET", "", "nested")
    assert route.cardinality is Cardinality.UNARY
    assert route.backend == "be:EverythingService"
    assert str(route.template) == "/v1/everything/{id}/nested"
    upload = _match(table, "POST", "/v1/uploads/cat.png")
    assert (upload.body, upload.response_body) == ("file", "file")


def test_additional_bindings_reach_the_same_method() -> None:
    table = _table()
    paths = ["/v1/everything/a", "/v2/everything/a", "/v1/colors/COLOR_RED/everything/a"]
    assert {_match(table, "GET", p).method.name for p in paths} == {"GetEverything"}


def test_cardinality_comes_from_the_descriptor() -> None:
    table = _table()
    assert _match(table, "GET", "/v1/everything/a:stream").cardinality is (
        Cardinality.SERVER_STREAMING
    )
    assert _match(table, "POST", "/v1/everything:collect").cardinality is (
        Cardinality.CLIENT_STREAMING
    )
    assert _match(table, "POST", "/v1/everything:chat").cardinality is Cardinality.BIDI_STREAMING


def test_wrong_verb_lists_the_allowed_ones() -> None:
    found = _table().match("PUT", "/v1/everything/a")
    assert isinstance(found, MethodNotAllowed)
    assert found.allowed == frozenset({"GET", "PATCH", "DELETE"})


def test_switchboard_routes_carry_gateway_options() -> None:
    table = build_route_table(from_modules(["switchboard.v1.chat_pb2"]), backend_of=lambda s: "b")
    subscribe = _match(table, "GET", "/v1/rooms/r1:subscribe")
    assert subscribe.sse is not None
    assert subscribe.sse.resume_field
    post = _match(table, "POST", "/v1/rooms/r1/messages")
    assert post.auth is not None
    assert list(post.auth.permissions)


def test_invalid_template_names_method_and_template(tmp_path: Path) -> None:
    services = _edited(tmp_path, "GetEverything", http_pb2.HttpRule(get="/v1/{id=everything/*"))
    with pytest.raises(RouteError) as caught:
        _table(services)
    assert "testing.v1.EverythingService.GetEverything" in str(caught.value)
    assert "/v1/{id=everything/*" in str(caught.value)


def test_conflicting_bindings_are_a_startup_error(tmp_path: Path) -> None:
    services = _edited(tmp_path, "DeleteEverything", http_pb2.HttpRule(get="/v1/everything/{id}"))
    with pytest.raises(RouteError, match="DeleteEverything") as caught:
        _table(services)
    assert "GetEverything" in str(caught.value)


def test_unknown_body_and_variable_fields_are_named(tmp_path: Path) -> None:
    bad_body = http_pb2.HttpRule(post="/v1/x", body="no_such_field")
    with pytest.raises(RouteError, match="no_such_field"):
        _table(_edited(tmp_path, "CreateEverything", bad_body))
    bad_variable = http_pb2.HttpRule(get="/v1/x/{nope}")
    with pytest.raises(RouteError, match="nope"):
        _table(_edited(tmp_path, "GetEverything", bad_variable))


def test_methods_without_rules_are_hidden_unless_auto_mapped(tmp_path: Path) -> None:
    services = _edited(tmp_path, "DeleteEverything", None)
    path = "/testing.v1.EverythingService/DeleteEverything"
    assert _table(services).match("POST", path) is None
    route = _match(_table(services, auto_map=True), "POST", path)
    assert (route.body, route.auto_mapped) == ("*", True)


def test_websocket_table_binds_streams_to_get() -> None:
    table = _table()
    sockets = websocket_table(table)
    assert _match(sockets, "GET", "/v1/everything:chat").method.name == "ChatEverything"
    assert _match(sockets, "GET", "/v1/everything:collect").method.name == "CollectEverything"
    assert sockets.match("GET", "/v1/everything/a") is None  # unary methods are not sockets
