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

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import status_pb2

from gateway.comments import Comments
from gateway.httprule import MULTI_WILDCARD, WILDCARD, RouteTable
from gateway.openapi_schema import (
    FieldPath,
    Schema,
    SchemaRegistry,
    field_behaviors,
    is_map_field,
    is_scalar_json,
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
LAST_EVENT_ID = "Last-Event-ID"
LAST_EVENT_ID_PARAMETER = "last_event_id"


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


def _singular(collection: str) -> str:
    if collection.endswith("ies") and len(collection) > 3:
        return collection[:-3] + "y"
    if collection.endswith("s") and not collection.endswith("ss") and len(collection) > 1:
        return collection[:-1]
    return f"{collection}_id"


def _first_sentence(text: str) -> str:
    first = text.split("\n\n", 1)[0].replace("\n", " ")
    end = first.find(". ")
    return first if end < 0 else first[: end + 1]


@dataclass
class _PathParameter:
    name: str
    field_path: FieldPath
    multi: bool  # a `**` segment
    template: str  # the variable's sub-template with this parameter's place, or ""


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
        self.bound = {variable.field_path for variable in self.route.template.variables}
        query = self._query_parameters()
        path, path_parameters = self._path(taken={str(p["name"]) for p in query})
        return path, path_parameters, query

    def render(self) -> tuple[str, Schema]:
        route = self.route
        path, path_parameters, query = self.locate()
        operation: Schema = {
            "operationId": self.operation_id,
            "tags": [route.method.containing_service.name],
            "parameters": [*path_parameters, *query, *self._sse_parameters()],
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

    # -- path --------------------------------------------------------------------------------

    def _path(self, *, taken: set[str]) -> tuple[str, list[Schema]]:
        template = self.route.template
        pieces: list[str] = []
        parameters: list[_PathParameter] = []
        starts = {variable.start: variable for variable in template.variables}
        index, wildcard = 0, 0
        segments = template.segments
        while index < len(segments):
            variable = starts.get(index)
            if variable is None:
                if segments[index] in (WILDCARD, MULTI_WILDCARD):
                    wildcard += 1
                    name = f"wildcard{wildcard}"
                    pieces.append("{" + name + "}")
                    parameters.append(_PathParameter(name, (), segments[index] == "**", ""))
                else:
                    pieces.append(segments[index])
                index += 1
                continue
            end = len(segments) if variable.open_ended else variable.end
            own = segments[variable.start : end]
            pieces.extend(self._variable_pieces(variable.field_path, own, parameters))
            index = end
        names = _unique([parameter.name for parameter in parameters], taken)
        for parameter, name in zip(parameters, names, strict=True):
            if name != parameter.name:
                pieces = [
                    ("{" + name + "}" if p == "{" + parameter.name + "}" else p) for p in pieces
                ]
                parameter.name = name
        path = "/" + "/".join(pieces) + (f":{template.verb}" if template.verb else "")
        return path, [self._path_parameter(parameter) for parameter in parameters]

    def _variable_pieces(
        self, field_path: FieldPath, own: Sequence[str], out: list[_PathParameter]
    ) -> list[str]:
        dotted = ".".join(field_path)
        if tuple(own) == (WILDCARD,):
            out.append(_PathParameter(dotted, field_path, False, ""))
            return ["{" + dotted + "}"]
        pieces: list[str] = []
        mine: list[_PathParameter] = []
        for position, segment in enumerate(own):
            if segment not in (WILDCARD, MULTI_WILDCARD):
                pieces.append(segment)
                continue
            before = own[position - 1] if position else ""
            literal = before not in ("", WILDCARD, MULTI_WILDCARD)
            name = _singular(before) if literal else f"{dotted}_{len(mine) + 1}"
            mine.append(_PathParameter(name, field_path, segment == MULTI_WILDCARD, ""))
            pieces.append("{" + name + "}")
        shown = "/".join(pieces)
        for parameter in mine:
            parameter.template = shown
        out.extend(mine)
        return pieces

    def _path_parameter(self, parameter: _PathParameter) -> Schema:
        schema: Schema
        if parameter.multi:
            schema = {"type": "string", "pattern": "^.*$"}
        elif parameter.template or not parameter.field_path:
            schema = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
        else:  # the whole field is one segment: its own schema (an enum, a number...)
            value = _non_null(self.registry.value(self._field_at(parameter.field_path)))
            schema = {**value, "minLength": 1} if value.get("type") == "string" else value
        result: Schema = {"name": parameter.name, "in": "path", "required": True, "schema": schema}
        descriptions: list[str] = []
        if parameter.field_path:
            result["x-field-path"] = ".".join(parameter.field_path)
            request_field = self._field_at(parameter.field_path)
            comment = self.registry.comments.get(request_field.full_name)
            if parameter.template:
                result["x-field-template"] = parameter.template
                descriptions.append(
                    f"`{parameter.name}` in `{'.'.join(parameter.field_path)}` = "
                    f"`{parameter.template}`."
                )
            if comment:
                descriptions.append(comment)
        else:
            descriptions.append("A path segment the gateway matches but binds to no field.")
        if parameter.multi:
            descriptions.append("May span several segments (`/` included).")
        result["description"] = "\n\n".join(descriptions)
        return result

    def _field_at(self, field_path: FieldPath) -> FieldDescriptor:
        message: Descriptor | None = self.route.method.input_type
        found: FieldDescriptor | None = None
        for name in field_path:
            assert message is not None
            found = message.fields_by_name[name]
            message = found.message_type
        assert found is not None
        return found

    # -- query -------------------------------------------------------------------------------

    def _query_parameters(self) -> list[Schema]:
        body = self.route.body
        if body == "*":
            return []
        excluded = set(self.bound)
        if body:
            excluded.add((body,))
        return _QueryWalk(self.registry, excluded).parameters(self.route.method.input_type)

    def _sse_parameters(self) -> list[Schema]:
        route = self.route
        if route.cardinality is not Cardinality.SERVER_STREAMING or route.sse is None:
            return []
        if not route.sse.resume_field:
            return []
        where = f"`{route.sse.resume_field}`"
        parameters: list[Schema] = [
            {
                "name": LAST_EVENT_ID,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": f"SSE resume cursor (sent by EventSource on reconnect); the "
                f"gateway writes it into {where}.",
            }
        ]
        if LAST_EVENT_ID_PARAMETER not in route.method.input_type.fields_by_name:
            parameters.append(
                {
                    "name": LAST_EVENT_ID_PARAMETER,
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": f"Resume cursor when the `{LAST_EVENT_ID}` header is absent; "
                    f"written into {where}.",
                }
            )
        return parameters

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


def _unique(names: list[str], taken: set[str]) -> list[str]:
    used = set(taken)
    result: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        result.append(candidate)
    return result


class _QueryWalk:
    """The query parameters of a request message: fields not excluded, nested ones dotted."""

    def __init__(self, registry: SchemaRegistry, excluded: set[FieldPath]) -> None:
        self.registry = registry
        self.excluded = excluded

    def parameters(self, message: Descriptor) -> list[Schema]:
        return self._walk(message, (), "", required=True, seen=(message.full_name,))

    def _walk(
        self,
        message: Descriptor,
        prefix: FieldPath,
        name_prefix: str,
        *,
        required: bool,
        seen: tuple[str, ...],
    ) -> list[Schema]:
        found: list[Schema] = []
        for field in message.fields:
            path = (*prefix, field.name)
            if path in self.excluded:
                continue
            if "OUTPUT_ONLY" in field_behaviors(field):
                continue  # the server ignores it on input
            name = name_prefix + self.registry.json_name(field)
            needed = required and "REQUIRED" in field_behaviors(field)
            nested = field.message_type
            if nested is None or is_map_field(field) or is_scalar_json(nested):
                parameter = self._parameter(field, name, needed)
                if parameter is not None:
                    found.append(parameter)
            elif not field.is_repeated and nested.full_name not in seen and _walkable(nested):
                found += self._walk(
                    nested, path, name + ".", required=needed, seen=(*seen, nested.full_name)
                )
        return found

    def _parameter(self, field: FieldDescriptor, name: str, required: bool) -> Schema | None:
        registry = self.registry
        if is_map_field(field):
            entry = field.message_type
            assert entry is not None
            if entry.fields_by_name["value"].message_type is not None:
                return None  # a map of messages cannot be written as query parameters
            schema = registry.shape(field)
            style = {"style": "deepObject", "explode": True}
        elif field.is_repeated:
            schema = {"type": "array", "items": _non_null(registry.value(field))}
            style = {"style": "form", "explode": True}
        else:
            schema = _non_null(registry.value(field))
            style = {}
        parameter: Schema = {"name": name, "in": "query", "schema": schema, **style}
        if required:
            parameter["required"] = True
            schema.update(non_default(field))
        comment = registry.comments.get(field.full_name)
        if comment:
            parameter["description"] = comment
        if field.GetOptions().deprecated:
            parameter["deprecated"] = True
        return parameter


def _walkable(message: Descriptor) -> bool:
    """Messages whose fields can be spelled as dotted query parameters (not Struct, Any…)."""
    return not message.full_name.startswith("google.protobuf.")


def _non_null(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        return rest[0] if len(rest) == 1 else {"anyOf": rest}
    return schema


if __name__ == "__main__":  # `python -m gateway.openapi` runs the command of gateway.openapi_cli
    from gateway.openapi_cli import main

    raise SystemExit(main())
