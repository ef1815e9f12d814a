"""OpenAPI 3.1 from the route table the gateway serves (sans-IO).

``render_openapi(table)`` documents every binding of ``build_route_table``'s table (additional
bindings included) as one operation; nothing is read from the annotations a second time, so the
document cannot disagree with the router. Mapping choices (gateway/docs/openapi.md has them all):

- operationId ``<Service>_<Method>``, then ``_1``, ``_2``… for additional bindings; one tag per
  service.
- Paths: each path parameter is exactly one path segment (or a trailing ``**``), so any client
  that percent-encodes parameters reaches the route. A variable binding one segment is one
  parameter named by its field path (``room.name``); a variable holding a sub-template
  (``{name=rooms/*/messages/*}``) is written out, its literals in the path and each wildcard a
  parameter named after the collection segment before it (``rooms/{room}/messages/{message}``),
  with ``x-field-path`` and ``x-field-template`` saying which field the pieces form.
- Query parameters: every request field bound neither by the path nor by the body, nested
  fields dotted, repeated ones exploded, maps as ``deepObject`` (``labels[key]=value``).
- Request bodies: ``body: "*"`` is the request without its path-bound fields; ``body: "field"``
  is that field (without path-bound sub-fields); client streaming takes NDJSON lines.
- Responses: 200 (and 201 for a create: a POST with a body to a collection, whose backend may
  say 201 through ``x-http-code``); server streaming answers ``text/event-stream`` (``x-sse``)
  or ``application/x-ndjson``; streaming methods carry ``x-websocket``; every error is a
  google.rpc.Status with the HTTP statuses the gateway's status table can produce.
- Security: a bearer JWT; an ``AuthRule.public`` method has ``security: []``.

Invariant: rendering is deterministic; ``dumps`` writes sorted keys and a trailing newline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.rpc import status_pb2

from gateway.comments import Comments
from gateway.httprule import MULTI_WILDCARD, WILDCARD, RouteTable
from gateway.openapi_params import RouteParameters
from gateway.openapi_schema import (
    FieldPath,
    Schema,
    SchemaRegistry,
    field_behaviors,
    non_default,
)
from gateway.openapi_streams import sse_extension, websocket_extension
from gateway.routes import Cardinality, Route
from gateway.transcode import JsonOptions, is_http_body

__all__ = [
    "NDJSON",
    "SECURITY_SCHEME",
    "SSE",
    "DocumentInfo",
    "OperationPath",
    "dumps",
    "operation_ids",
    "operation_path",
    "render_openapi",
]

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearerAuth"
JSON_TYPE = "application/json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
ANY_MEDIA = "*/*"


@dataclass(frozen=True)
class DocumentInfo:
    """The document's ``info`` and ``servers``."""

    title: str = "Switchboard API"
    version: str = "v1"
    description: str = (
        "REST, Server-Sent Events, NDJSON and WebSocket access to gRPC services through the "
        "Switchboard gateway. Generated from the gateway's route table."
    )
    servers: tuple[str, ...] = ("http://127.0.0.1:8080",)


@dataclass(frozen=True)
class _Error:
    status: str
    name: str
    description: str


_ERRORS = {
    error.status: error
    for error in (
        _Error(
            "400",
            "BadRequest",
            "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE; or a path, query "
            "parameter or body the gateway cannot transcode (a google.rpc.BadRequest detail "
            "names the field).",
        ),
        _Error("401", "Unauthorized", "UNAUTHENTICATED: no valid bearer token."),
        _Error("403", "Forbidden", "PERMISSION_DENIED: the token lacks a permission."),
        _Error("404", "NotFound", "NOT_FOUND."),
        _Error("409", "Conflict", "ALREADY_EXISTS or ABORTED."),
        _Error("413", "PayloadTooLarge", "The request body exceeds the gateway's limit."),
        _Error("415", "UnsupportedMediaType", "The body is not NDJSON or JSON."),
        _Error("426", "UpgradeRequired", "The method is served over WebSocket only."),
        _Error("429", "TooManyRequests", "RESOURCE_EXHAUSTED."),
        _Error("500", "InternalError", "INTERNAL, UNKNOWN or DATA_LOSS."),
        _Error("501", "NotImplemented", "UNIMPLEMENTED."),
        _Error("503", "Unavailable", "UNAVAILABLE: the backend cannot be reached."),
        _Error("504", "GatewayTimeout", "DEADLINE_EXCEEDED."),
    )
}
_ALWAYS = ("400", "404", "409", "429", "500", "501", "503", "504")


def render_openapi(
    table: RouteTable[Route],
    *,
    json_options: JsonOptions | None = None,
    comments: Comments | None = None,
    info: DocumentInfo | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``table``."""
    info = info or DocumentInfo()
    registry = SchemaRegistry(
        json_options=json_options or JsonOptions(), comments=comments or Comments()
    )
    status_ref = registry.message(status_pb2.Status.DESCRIPTOR)
    paths: dict[str, dict[str, Any]] = {}
    routes = [route for _, _, route in table.routes()]
    for route, operation_id in zip(routes, operation_ids(routes), strict=True):
        path, operation = _Operation(route, operation_id, registry).render()
        methods = paths.setdefault(path, {})
        verb = route.http_method.lower()
        if verb in methods:
            raise ValueError(f"two operations for {route.http_method} {path}: {operation_id}")
        methods[verb] = operation
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": info.title, "version": info.version, "description": info.description},
        "servers": [{"url": url} for url in info.servers],
        "tags": _tags(routes, registry.comments),
        "paths": paths,
        "security": [{SECURITY_SCHEME: []}],
        "components": {
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT the gateway verifies; its roles grant the "
                    "permissions an operation lists in `x-required-permissions`. Streams also "
                    "take it from a cookie, and WebSockets from the subprotocol pair `bearer`, "
                    "`<token>`, when the gateway is configured so.",
                }
            },
            "responses": {
                error.name: _error_response(error.description, status_ref)
                for error in _ERRORS.values()
            }
            | {"Error": _error_response("Any other error, as google.rpc.Status.", status_ref)},
        },
    }
    registry.finish(document)
    return document


@dataclass(frozen=True)
class OperationPath:
    """A route's OpenAPI path and its path parameters as (name, description)."""

    path: str
    parameters: tuple[tuple[str, str], ...]


def operation_path(route: Route, registry: SchemaRegistry) -> OperationPath:
    """Where ``route`` lives in the OpenAPI document (the AsyncAPI channel address too)."""
    path, parameters, _ = _Operation(route, "", registry).locate()
    return OperationPath(path, tuple((p["name"], p["description"]) for p in parameters))


def dumps(document: dict[str, Any]) -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def operation_ids(routes: Sequence[Route]) -> list[str]:
    """``Service_Method`` for each method's first binding, ``_1``, ``_2``… for the next ones."""
    seen: dict[str, int] = {}
    ids: list[str] = []
    for route in routes:
        base = f"{route.method.containing_service.name}_{route.method.name}"
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.append(base if count == 0 else f"{base}_{count}")
    return ids


def _tags(routes: Iterable[Route], comments: Comments) -> list[dict[str, str]]:
    services = {route.method.containing_service for route in routes}
    tags = []
    for service in sorted(services, key=lambda s: s.name):
        tag = {"name": service.name}
        if comments.get(service.full_name):
            tag["description"] = comments.get(service.full_name)
        tags.append(tag)
    return tags


def _error_response(description: str, status_ref: Schema) -> Schema:
    return {"description": description, "content": {JSON_TYPE: {"schema": dict(status_ref)}}}


def _error_ref(status: str) -> Schema:
    return {"$ref": f"#/components/responses/{_ERRORS[status].name}"}


def _first_sentence(text: str) -> str:
    first = text.split("\n\n", 1)[0].replace("\n", " ")
    end = first.find(". ")
    return first if end < 0 else first[: end + 1]


@dataclass
class _Operation:
    """One route rendered as (OpenAPI path, operation object)."""

    route: Route
    operation_id: str
    registry: SchemaRegistry
    bound: set[FieldPath] = dataclass_field(default_factory=set)
    body_description: str = ""

    def locate(self) -> tuple[str, list[Schema], list[Schema]]:
        """The OpenAPI path, its path parameters and the query parameters."""
        parameters = RouteParameters(self.route, self.registry)
        self.bound = parameters.bound
        return parameters.locate()

    def render(self) -> tuple[str, Schema]:
        route = self.route
        path, path_parameters, query = self.locate()
        operation: Schema = {
            "operationId": self.operation_id,
            "tags": [route.method.containing_service.name],
            "parameters": [*path_parameters, *query, *RouteParameters(route, self.registry).sse()],
            "responses": self._responses(),
            "x-grpc": {
                "method": route.rpc_path,
                "cardinality": route.cardinality.value,
                "httpRule": f"{route.http_method} {route.template}",
                **({"body": route.body} if route.body else {}),
                **({"responseBody": route.response_body} if route.response_body else {}),
            },
        }
        self._describe(operation)
        self._security(operation)
        body = self._request_body()
        if body is not None:
            operation["requestBody"] = body
        if route.cardinality is not Cardinality.UNARY:
            operation["x-websocket"] = websocket_extension(route, self.registry)
        if route.sse is not None and route.cardinality is Cardinality.SERVER_STREAMING:
            operation["x-sse"] = sse_extension(route, self.registry)
        if not operation["parameters"]:
            del operation["parameters"]
        return path, operation

    # -- description and security ------------------------------------------------------------

    def _describe(self, operation: Schema) -> None:
        method = self.route.method
        comment = self.registry.comments.get(method.full_name)
        if comment:
            operation["summary"] = _first_sentence(comment)
            operation["description"] = comment
        if method.GetOptions().deprecated:
            operation["deprecated"] = True

    def _security(self, operation: Schema) -> None:
        auth = self.route.auth
        if auth is not None and auth.public:
            operation["security"] = []
            return
        operation["security"] = [{SECURITY_SCHEME: []}]
        operation["x-required-permissions"] = sorted(auth.permissions) if auth else []
        if auth is None:
            note = "No auth rule: the gateway denies this method to every caller."
            operation["description"] = "\n\n".join(
                part for part in (operation.get("description", ""), note) if part
            )

    # -- request body ------------------------------------------------------------------------

    def _request_body(self) -> Schema | None:
        route = self.route
        if not route.body:
            return None
        raw = self._raw_body()
        if raw is not None:
            return raw
        schema, required = self._body_schema()
        if route.cardinality in (Cardinality.CLIENT_STREAMING, Cardinality.BIDI_STREAMING):
            return {
                "required": True,
                "description": "Newline-delimited JSON: each line is one request message of "
                "the stream (the schema describes one line); path and query fields apply to "
                "every message. `application/json` and `application/jsonl` are accepted too.",
                "content": {NDJSON: {"schema": schema}},
            }
        body: Schema = {"required": required, "content": {JSON_TYPE: {"schema": schema}}}
        if self.body_description:
            body["description"] = self.body_description
        return body

    def _raw_body(self) -> Schema | None:
        """The request body when it is a google.api.HttpBody: raw bytes of any media type."""
        request = self.route.method.input_type
        if self.route.body == "*":
            target: Descriptor | None = request
        else:
            target = request.fields_by_name[self.route.body].message_type
        if not is_http_body(target):
            return None
        return {
            "required": True,
            "description": "The raw body; its Content-Type is passed on (google.api.HttpBody).",
            "content": {ANY_MEDIA: {"schema": {"type": "string", "format": "binary"}}},
        }

    def _body_schema(self) -> tuple[Schema, bool]:
        route, registry = self.route, self.registry
        request = route.method.input_type
        if route.body == "*":
            required = any(
                "REQUIRED" in field_behaviors(f)
                for f in request.fields
                if (f.name,) not in self.bound
            )
            if not self.bound:
                return registry.message(request), required
            derived = registry.object(request, without=self.bound)
            return registry.add_named(f"{self.operation_id}Body", derived), required
        body_field = request.fields_by_name[route.body]
        required = "REQUIRED" in field_behaviors(body_field)
        self.body_description = registry.comments.get(body_field.full_name)
        inner = {path[1:] for path in self.bound if path[0] == route.body and len(path) > 1}
        if inner and body_field.message_type is not None and not body_field.is_repeated:
            derived = registry.object(body_field.message_type, without=inner)
            return registry.add_named(f"{self.operation_id}Body", derived), required
        schema = registry.shape(body_field)
        if required:
            schema.update(non_default(body_field))
        return schema, required

    # -- responses ---------------------------------------------------------------------------

    def _responses(self) -> Schema:
        route = self.route
        responses: Schema = {"default": {"$ref": "#/components/responses/Error"}}
        for status in self._error_statuses():
            responses[status] = _error_ref(status)
        item = self._response_item()
        if route.cardinality is Cardinality.UNARY and self._raw_response():
            responses["200"] = {
                "description": "The raw body, with the Content-Type the backend chose "
                "(google.api.HttpBody).",
                "content": {ANY_MEDIA: {"schema": {"type": "string", "format": "binary"}}},
            }
        elif route.cardinality is Cardinality.UNARY:
            responses["200"] = {"description": "OK.", "content": {JSON_TYPE: {"schema": item}}}
            if _is_create(route):
                responses["201"] = {
                    "description": "Created (when the backend says so with `x-http-code`).",
                    "content": {JSON_TYPE: {"schema": dict(item)}},
                }
        elif route.cardinality is Cardinality.CLIENT_STREAMING:
            responses["200"] = {
                "description": "The one response, after the request stream ended.",
                "content": {JSON_TYPE: {"schema": item}},
            }
        elif route.cardinality is Cardinality.SERVER_STREAMING:
            responses["200"] = self._server_stream_response(item)
        else:
            responses["101"] = {
                "description": "Switching Protocols: the call runs over the WebSocket "
                "(`x-websocket` describes the frames)."
            }
        return responses

    def _error_statuses(self) -> list[str]:
        route = self.route
        statuses = list(_ALWAYS)
        if route.auth is None or not route.auth.public:
            statuses += ["401", "403"]
        if route.body or route.cardinality is Cardinality.CLIENT_STREAMING:
            statuses.append("413")
        if route.cardinality is Cardinality.CLIENT_STREAMING:
            statuses.append("415")
        if route.cardinality is Cardinality.BIDI_STREAMING:
            statuses.append("426")
        return sorted(statuses)

    def _raw_response(self) -> bool:
        output = self.route.method.output_type
        if self.route.response_body:
            return is_http_body(output.fields_by_name[self.route.response_body].message_type)
        return is_http_body(output)

    def _response_item(self) -> Schema:
        route = self.route
        output = route.method.output_type
        if route.response_body:
            return self.registry.field(output.fields_by_name[route.response_body])
        return self.registry.message(output)

    def _server_stream_response(self, item: Schema) -> Schema:
        status = self.registry.message(status_pb2.Status.DESCRIPTOR)
        line = {
            "oneOf": [
                _single_key("result", item),
                _single_key("error", status),
            ],
        }
        return {
            "description": "A stream of messages. `Accept: text/event-stream` gives Server-Sent "
            "Events (one event per message, its data the message; a failure after the first "
            "event ends the stream with `event: error` whose data is a google.rpc.Status). Any "
            "other Accept gives NDJSON, one `result` line per message and a final `error` line "
            "on failure. Each schema describes one event's data or one line.",
            "content": {
                SSE: {"schema": {"anyOf": [dict(item), dict(status)]}},
                NDJSON: {"schema": line},
            },
        }


def _single_key(key: str, schema: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {key: dict(schema)},
        "required": [key],
        "additionalProperties": False,
    }


def _is_create(route: Route) -> bool:
    """A POST with a body to a collection (AIP-133 Create): the backend may answer 201."""
    segments = route.template.segments
    last_is_literal = bool(segments) and not any(
        variable.end == len(segments) for variable in route.template.variables
    )
    return (
        route.http_method == "POST"
        and bool(route.body)
        and not route.template.verb
        and last_is_literal
        and segments[-1] not in (WILDCARD, MULTI_WILDCARD)
    )


if __name__ == "__main__":  # `python -m gateway.openapi` runs the command of gateway.openapi_cli
    from gateway.openapi_cli import main

    raise SystemExit(main())
