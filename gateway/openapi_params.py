"""The parameters of an operation: its OpenAPI path and path, query and header parameters.

Sans-IO, used by ``gateway.openapi`` (see its docstring and gateway/docs/openapi.md):

- ``RouteParameters.path`` writes the route's template as an OpenAPI path whose every parameter
  is one segment (or a trailing ``**``): a one-segment variable is one parameter named by its
  field path; a variable with a sub-template is written out, each wildcard a parameter named
  after the collection segment before it, singular (``rooms/{room}/messages/{message}``);
- ``RouteParameters.query`` lists every request field that neither the path nor the body binds
  (dotted for nested fields, exploded arrays, deepObject maps; OUTPUT_ONLY fields, repeated
  messages, maps of messages, Struct/Any/... are left out, and recursion stops);
- ``RouteParameters.sse`` adds ``Last-Event-ID`` (and ``last_event_id``) for SSE resume.

Invariant: parameter names are unique within an operation (a path parameter that would clash
gets a ``_2`` suffix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.httprule import MULTI_WILDCARD, WILDCARD
from gateway.openapi_schema import (
    FieldPath,
    Schema,
    SchemaRegistry,
    field_behaviors,
    is_map_field,
    is_scalar_json,
    non_default,
)
from gateway.routes import Cardinality, Route

__all__ = ["LAST_EVENT_ID", "LAST_EVENT_ID_PARAMETER", "RouteParameters", "non_null"]

LAST_EVENT_ID = "Last-Event-ID"
LAST_EVENT_ID_PARAMETER = "last_event_id"


def _singular(collection: str) -> str:
    if collection.endswith("ies") and len(collection) > 3:
        return collection[:-3] + "y"
    if collection.endswith("s") and not collection.endswith("ss") and len(collection) > 1:
        return collection[:-1]
    return f"{collection}_id"


@dataclass
class _PathParameter:
    name: str
    field_path: FieldPath
    multi: bool  # a `**` segment
    template: str  # the variable's sub-template with this parameter's place, or ""


class RouteParameters:
    """The path and the parameters of one route."""

    def __init__(self, route: Route, registry: SchemaRegistry) -> None:
        self.route = route
        self.registry = registry
        self.bound = {variable.field_path for variable in route.template.variables}

    def locate(self) -> tuple[str, list[Schema], list[Schema]]:
        """The OpenAPI path, its path parameters and the query parameters."""
        query = self.query()
        path, path_parameters = self.path(taken={str(p["name"]) for p in query})
        return path, path_parameters, query

    def path(self, *, taken: set[str]) -> tuple[str, list[Schema]]:
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
            value = non_null(self.registry.value(self._field_at(parameter.field_path)))
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

    def query(self) -> list[Schema]:
        body = self.route.body
        if body == "*":
            return []
        excluded = set(self.bound)
        if body:
            excluded.add((body,))
        return _QueryWalk(self.registry, excluded).parameters(self.route.method.input_type)

    def sse(self) -> list[Schema]:
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
            schema = {"type": "array", "items": non_null(registry.value(field))}
            style = {"style": "form", "explode": True}
        else:
            schema = non_null(registry.value(field))
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


def non_null(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        return rest[0] if len(rest) == 1 else {"anyOf": rest}
    return schema
