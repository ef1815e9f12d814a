"""JSON Schemas of protobuf messages, as the gateway prints and parses them (sans-IO).

``SchemaRegistry`` turns descriptors into OpenAPI 3.1 (JSON Schema 2020-12) schemas that follow
the proto3 JSON mapping exactly as ``gateway.jsonmap`` prints it under a ``JsonOptions``:

- keys are lowerCamelCase JSON names (proto names with ``use_proto_names``);
- 64-bit integers are decimal strings (``format: int64`` / ``uint64``), 32-bit ones integers;
  floats are numbers or one of the strings ``NaN``, ``Infinity``, ``-Infinity``; bytes are
  base64 strings (``format: byte``);
- enums are string enums of value names (integers with ``enums_as_ints``);
- Timestamp is a ``date-time`` string, Duration a ``"1.5s"`` string, FieldMask a comma list;
  wrappers are their scalar or null; Struct/Value/ListValue any JSON object/value/array; Any
  an object with ``@type``; Empty an empty object;
- maps are objects with ``additionalProperties`` (non-string keys as their decimal or
  ``true``/``false`` text); repeated fields arrays;
- oneof members are all listed, the oneof named in ``x-oneof`` and in the description;
- google.api.field_behavior: REQUIRED → ``required``, OUTPUT_ONLY → ``readOnly``,
  INPUT_ONLY → ``writeOnly``; every behavior is also listed in ``x-field-behavior``.

Messages and enums become components referenced with ``$ref`` (so recursive messages work);
well-known types are inlined. A component is named by its name inside its package (``Room``,
``Outer.Inner``) unless two referenced types share that name, then both use their full names.

Invariant: one registry renders one document; ``finish`` assigns the final component names and
rewrites every reference in the document, so nothing outside sees a provisional reference.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.comments import Comments
from gateway.transcode import JsonOptions

__all__ = [
    "COMPONENT_PREFIX",
    "FieldPath",
    "Schema",
    "SchemaRegistry",
    "field_behaviors",
    "is_map_field",
    "is_scalar_json",
    "non_default",
]

Schema = dict[str, Any]
FieldPath = tuple[str, ...]

COMPONENT_PREFIX = "#/components/schemas/"
_PROVISIONAL = "proto:"
_F = FieldDescriptor
_INT64_PATTERN = "^-?[0-9]+$"
_UINT64_PATTERN = "^[0-9]+$"
_DURATION_PATTERN = r"^-?[0-9]+(\.[0-9]{1,9})?s$"
_WRAPPERS = {
    f"google.protobuf.{kind}Value": kind
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
_STRING_LIKE = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}


def _number(fmt: str) -> Schema:
    return {
        "oneOf": [
            {"type": "number", "format": fmt},
            {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
        ]
    }


def _integer(fmt: str, low: int, high: int) -> Schema:
    return {"type": "integer", "format": fmt, "minimum": low, "maximum": high}


def _int64(fmt: str, pattern: str) -> Schema:
    return {"type": "string", "format": fmt, "pattern": pattern}


_INT32 = _integer("int32", -(2**31), 2**31 - 1)
_UINT32 = _integer("uint32", 0, 2**32 - 1)
_SCALARS: dict[int, Schema] = {
    _F.TYPE_DOUBLE: _number("double"),
    _F.TYPE_FLOAT: _number("float"),
    _F.TYPE_INT64: _int64("int64", _INT64_PATTERN),
    _F.TYPE_SINT64: _int64("int64", _INT64_PATTERN),
    _F.TYPE_SFIXED64: _int64("int64", _INT64_PATTERN),
    _F.TYPE_UINT64: _int64("uint64", _UINT64_PATTERN),
    _F.TYPE_FIXED64: _int64("uint64", _UINT64_PATTERN),
    _F.TYPE_INT32: _INT32,
    _F.TYPE_SINT32: _INT32,
    _F.TYPE_SFIXED32: _INT32,
    _F.TYPE_UINT32: _UINT32,
    _F.TYPE_FIXED32: _UINT32,
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
_WRAPPED_TYPE = {
    "Double": _F.TYPE_DOUBLE,
    "Float": _F.TYPE_FLOAT,
    "Int64": _F.TYPE_INT64,
    "UInt64": _F.TYPE_UINT64,
    "Int32": _F.TYPE_INT32,
    "UInt32": _F.TYPE_UINT32,
    "Bool": _F.TYPE_BOOL,
    "String": _F.TYPE_STRING,
    "Bytes": _F.TYPE_BYTES,
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 time in UTC, e.g. `2024-01-02T03:04:05.678Z`.",
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": _DURATION_PATTERN,
        "description": "Seconds with up to 9 fractional digits and an `s` suffix, e.g. `1.5s`.",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths in lowerCamelCase, e.g. `displayName,labels`.",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": {}},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "description": "A message of the type `@type` names, its fields beside `@type` (a "
        "well-known type's JSON form is under `value`).",
        "properties": {"@type": {"type": "string", "description": "Type URL of the message."}},
        "required": ["@type"],
        "additionalProperties": {},
    },
}
_BEHAVIOR_NAMES = {
    value.number: value.name
    for value in field_behavior_pb2.DESCRIPTOR.enum_types_by_name["FieldBehavior"].values
}


def field_behaviors(field: FieldDescriptor) -> frozenset[str]:
    """The google.api.field_behavior names of ``field`` (re-parsed: pools from files)."""
    options = descriptor_pb2.FieldOptions.FromString(field.GetOptions().SerializeToString())
    values = options.Extensions[field_behavior_pb2.field_behavior]
    return frozenset(_BEHAVIOR_NAMES.get(int(value), str(value)) for value in values)


def non_default(field: FieldDescriptor) -> Schema:
    """What REQUIRED adds to a field's schema: proto3 cannot tell an empty string, list or
    map from an absent one, so a required one must not be empty (AIP-203)."""
    if is_map_field(field):
        return {"minProperties": 1}
    if field.is_repeated:
        return {"minItems": 1}
    if field.type in (_F.TYPE_STRING, _F.TYPE_BYTES):
        return {"minLength": 1}
    return {}


def is_map_field(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def is_scalar_json(message: Descriptor) -> bool:
    """A well-known type whose JSON form is one string/number/bool (query parameter material)."""
    return message.full_name in _STRING_LIKE or message.full_name in _WRAPPERS


def _nullable(schema: Schema) -> Schema:
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


class SchemaRegistry:
    """Builds the component schemas of one document (see the module docstring)."""

    def __init__(self, *, json_options: JsonOptions, comments: Comments) -> None:
        self.json_options = json_options
        self.comments = comments
        self._messages: dict[str, Descriptor] = {}
        self._enums: dict[str, EnumDescriptor] = {}
        self._named: dict[str, Schema] = {}

    # -- names -----------------------------------------------------------------------------

    def json_name(self, field: FieldDescriptor) -> str:
        return field.name if self.json_options.use_proto_names else field.json_name

    # -- references ------------------------------------------------------------------------

    def message(self, message: Descriptor) -> Schema:
        """The schema of a message value: a well-known type inline, else a reference."""
        full = message.full_name
        wrapped = _WRAPPERS.get(full)
        if wrapped is not None:
            return _nullable(dict(_SCALARS[_WRAPPED_TYPE[wrapped]]))
        if full in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full])
        self._messages.setdefault(full, message)
        return {"$ref": _PROVISIONAL + full}

    def enum(self, enum: EnumDescriptor) -> Schema:
        if enum.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        self._enums.setdefault(enum.full_name, enum)
        return {"$ref": _PROVISIONAL + enum.full_name}

    def add_named(self, name: str, schema: Schema) -> Schema:
        """Register a schema under a final component name; a reference to it."""
        if name in self._named:
            raise ValueError(f"OpenAPI component {name!r} is defined twice")
        self._named[name] = schema
        return {"$ref": COMPONENT_PREFIX + name}

    # -- field schemas ---------------------------------------------------------------------

    def value(self, field: FieldDescriptor) -> Schema:
        """The schema of one value of ``field`` (an element, for a repeated field)."""
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            assert field.message_type is not None
            return self.message(field.message_type)
        if field.type == _F.TYPE_ENUM:
            assert field.enum_type is not None
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def shape(self, field: FieldDescriptor) -> Schema:
        """The schema of the field's whole JSON value: map, array or single value."""
        if is_map_field(field):
            entry = field.message_type
            assert entry is not None
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.value(entry.fields_by_name["value"]),
            }
            keys = _map_key_schema(entry.fields_by_name["key"])
            if keys:
                schema["propertyNames"] = keys
            return schema
        if field.is_repeated:
            return {"type": "array", "items": self.value(field)}
        return self.value(field)

    def field(self, field: FieldDescriptor) -> Schema:
        """``shape`` annotated with the field's comment, behaviors and deprecation."""
        schema = self.shape(field)
        description = self.comments.get(field.full_name)
        if description:
            schema["description"] = description
        behaviors = field_behaviors(field)
        if "REQUIRED" in behaviors:
            schema.update(non_default(field))
        if "OUTPUT_ONLY" in behaviors:
            schema["readOnly"] = True
        if "INPUT_ONLY" in behaviors:
            schema["writeOnly"] = True
        if behaviors:
            schema["x-field-behavior"] = sorted(behaviors)
        if field.GetOptions().deprecated:
            schema["deprecated"] = True
        return schema

    def object(self, message: Descriptor, *, without: Collection[FieldPath] = ()) -> Schema:
        """The object schema of ``message``, leaving out the fields at the ``without`` paths
        (a path reaching into a message field leaves out only that nested field)."""
        properties: Schema = {}
        required: list[str] = []
        for field in message.fields:
            if (field.name,) in without:
                continue
            name = self.json_name(field)
            nested = [path[1:] for path in without if len(path) > 1 and path[0] == field.name]
            if nested and field.message_type is not None and not field.is_repeated:
                properties[name] = self._annotated_inline(field, nested)
            else:
                properties[name] = self.field(field)
            if "REQUIRED" in field_behaviors(field):
                required.append(name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        self._describe(schema, message)
        return schema

    def _annotated_inline(self, field: FieldDescriptor, without: list[FieldPath]) -> Schema:
        assert field.message_type is not None
        schema = self.object(field.message_type, without=without)
        description = self.comments.get(field.full_name)
        if description:
            schema["description"] = description
        return schema

    def _describe(self, schema: Schema, message: Descriptor) -> None:
        parts = [self.comments.get(message.full_name)]
        oneofs = {
            oneof.name: [self.json_name(member) for member in oneof.fields]
            for oneof in message.oneofs
            if not _is_synthetic(oneof.fields)
        }
        for oneof, members in oneofs.items():
            listed = ", ".join(f"`{member}`" for member in members)
            parts.append(f"At most one of {listed} is set (oneof `{oneof}`).")
        description = "\n\n".join(part for part in parts if part)
        if description:
            schema["description"] = description
        if oneofs:
            schema["x-oneof"] = oneofs

    # -- components ------------------------------------------------------------------------

    def finish(self, document: Schema) -> None:
        """Build every referenced component, name them, and rewrite references in place."""
        built: dict[str, Schema] = {}
        while len(built) < len(self._messages) + len(self._enums):
            for full, message in list(self._messages.items()):
                if full not in built:
                    built[full] = self.object(message)
            for full, enum in list(self._enums.items()):
                if full not in built:
                    built[full] = self._enum_schema(enum)
        names = self._component_names()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for full, schema in built.items():
            schemas[names[full]] = schema
        for name, schema in self._named.items():
            if name in schemas:
                raise ValueError(f"OpenAPI component {name!r} clashes with a message or enum")
            schemas[name] = schema
        _rewrite_refs(
            document, {_PROVISIONAL + full: COMPONENT_PREFIX + n for full, n in names.items()}
        )

    def _component_names(self) -> dict[str, str]:
        packages = {
            **{full: m.file.package for full, m in self._messages.items()},
            **{full: e.file.package for full, e in self._enums.items()},
        }
        short = {
            full: full[len(package) + 1 :] if package else full
            for full, package in packages.items()
        }
        counts: dict[str, int] = {}
        for name in short.values():
            counts[name] = counts.get(name, 0) + 1
        return {full: name if counts[name] == 1 else full for full, name in short.items()}

    def _enum_schema(self, enum: EnumDescriptor) -> Schema:
        values = list(enum.values)
        lines = [self.comments.get(enum.full_name)]
        documented = [
            f"- `{value.name}`: {self.comments.get(f'{enum.full_name}.{value.name}')}"
            for value in values
            if self.comments.get(f"{enum.full_name}.{value.name}")
        ]
        if documented:
            lines.append("\n".join(documented))
        schema: Schema
        if self.json_options.enums_as_ints:
            numbers = sorted({value.number for value in values})
            schema = {"type": "integer", "format": "int32", "enum": numbers}
        else:
            schema = {
                "type": "string",
                "enum": [value.name for value in values],
                "x-enum-descriptions": [
                    self.comments.get(f"{enum.full_name}.{value.name}") for value in values
                ],
            }
        description = "\n\n".join(line for line in lines if line)
        if description:
            schema["description"] = description
        return schema


def _map_key_schema(key: FieldDescriptor) -> Schema | None:
    if key.type == _F.TYPE_BOOL:
        return {"enum": ["true", "false"]}
    if key.type == _F.TYPE_STRING:
        return None
    unsigned = key.type in (_F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_FIXED32, _F.TYPE_FIXED64)
    return {"pattern": _UINT64_PATTERN if unsigned else _INT64_PATTERN}


def _is_synthetic(members: Sequence[FieldDescriptor]) -> bool:
    """A proto3 ``optional`` field's one-member oneof, which is no real choice."""
    return len(members) == 1 and members[0].has_presence and _proto3_optional(members[0])


def _proto3_optional(field: FieldDescriptor) -> bool:
    containing = field.containing_type
    assert containing is not None
    message = descriptor_pb2.DescriptorProto()
    containing.CopyToProto(message)
    return next(f for f in message.field if f.name == field.name).proto3_optional


def _rewrite_refs(node: Any, names: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in names:
            node["$ref"] = names[ref]
        for value in node.values():
            _rewrite_refs(value, names)
    elif isinstance(node, list):
        for item in node:
            _rewrite_refs(item, names)
