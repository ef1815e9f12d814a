"""SchemaRegistry: whatever message the gateway prints validates against its schema.

Random ``testing.v1.Everything`` messages (every scalar, enum, map, repeated, oneof, recursive
and well-known field) are printed by ``gateway.jsonmap`` — the gateway's printer — under several
JsonOptions and validated against the schema rendered with the same options. Component naming
and the REQUIRED constraints are checked on small hand-made descriptors.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from gateway.comments import Comments
from gateway.openapi_schema import SchemaRegistry, field_behaviors
from gateway.transcode import JsonOptions, encode_message
from switchboard.v1 import chat_pb2
from tests.gateway.everything import everything_pb2

F = FieldDescriptor
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8)
INT_RANGES = {
    F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    F.CPPTYPE_UINT32: (0, 2**32 - 1),
    F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
WELL_KNOWN_VALUES: dict[str, list[Any]] = {
    "google.protobuf.FieldMask": [["int64_value"], ["nested.name", "color"], []],
    "google.protobuf.Struct": [{}, {"a": 1.5, "b": [True, None, "x"], "c": {"d": "e"}}],
    "google.protobuf.Value": [None, 2.0, "s", True, [1.0, "two"], {"k": None}],
    "google.protobuf.ListValue": [[], [1.0, {"a": [None]}]],
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.cpp_type in INT_RANGES:
        low, high = INT_RANGES[field.cpp_type]
        return st.integers(low, high)
    if field.cpp_type == F.CPPTYPE_FLOAT:
        return st.floats(width=32)
    if field.cpp_type == F.CPPTYPE_DOUBLE:
        return st.floats()
    if field.cpp_type == F.CPPTYPE_BOOL:
        return st.booleans()
    if field.cpp_type == F.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([value.number for value in field.enum_type.values])
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=8)
    return TEXT


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    full = descriptor.full_name
    if full == "google.protobuf.Timestamp":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            st.integers(0, 253402300799),
            st.integers(0, 999_999_999),
        )
    if full == "google.protobuf.Duration":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n if s >= 0 else -n),
            st.integers(-(10**9), 10**9),
            st.integers(0, 999_999_999),
        )
    if full == "google.protobuf.Any":
        return st.just(_any(cls))
    if full in WELL_KNOWN_VALUES:
        return st.sampled_from(WELL_KNOWN_VALUES[full]).map(lambda v: _from_json(cls, v))
    fields = [f for f in descriptor.fields if depth < 2 or f.message_type is None]
    optional = {f.name: value(f, depth) for f in fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: _build(cls, kw))


def _any(cls: type[Message]) -> Message:
    packed = cls()
    packed.Pack(duration_pb2.Duration(seconds=3))
    return packed


def _from_json(cls: type[Message], json_value: Any) -> Message:
    if cls.DESCRIPTOR.full_name == "google.protobuf.FieldMask":
        return cls(paths=json_value)
    return json_format.Parse(orjson.dumps(json_value), cls())


def value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        entry = field.message_type
        keys = scalar(entry.fields_by_name["key"])
        values = value(entry.fields_by_name["value"], depth + 1)
        return st.dictionaries(keys, values, max_size=2)
    single = (
        message(field.message_type, depth + 1) if field.message_type is not None else scalar(field)
    )
    return st.lists(single, max_size=2) if field.is_repeated else single


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    built = cls()
    for name, item in values.items():
        target = getattr(built, name)
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, entry in item.items():
                if isinstance(entry, Message):
                    target[key].CopyFrom(entry)
                else:
                    target[key] = entry
        elif field.is_repeated and field.message_type is not None:
            for entry in item:
                target.add().CopyFrom(entry)
        elif field.is_repeated:
            target.extend(item)
        elif field.message_type is not None:
            target.CopyFrom(item)
        else:
            setattr(built, name, item)
    return built


def schema_for(descriptor: Descriptor, options: JsonOptions) -> Draft202012Validator:
    registry = SchemaRegistry(json_options=options, comments=Comments())
    document: dict[str, Any] = {"root": registry.message(descriptor)}
    registry.finish(document)
    root = {**document["root"], "components": document["components"]}
    return Draft202012Validator(root)


OPTIONS = [
    JsonOptions(),
    JsonOptions(emit_unpopulated=False),
    JsonOptions(use_proto_names=True, enums_as_ints=True),
]
VALIDATORS = [schema_for(everything_pb2.Everything.DESCRIPTOR, options) for options in OPTIONS]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message(everything_pb2.Everything.DESCRIPTOR), st.integers(0, len(OPTIONS) - 1))
def test_every_printed_message_matches_its_schema(sample: Message, which: int) -> None:
    printed = orjson.loads(encode_message(sample, options=OPTIONS[which]))
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in VALIDATORS[which].iter_errors(printed)
    ]
    assert not errors, (errors, printed)


def test_non_finite_floats_are_admitted() -> None:
    sample = everything_pb2.Everything(double_value=math.inf, float_value=math.nan)
    printed = orjson.loads(encode_message(sample, options=JsonOptions()))
    assert printed["doubleValue"] == "Infinity"
    assert not list(VALIDATORS[0].iter_errors(printed))


def _pool_with_two_packages() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for package in ("alpha.v1", "beta.v1"):
        file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package)
        file.syntax = "proto3"
        item = file.message_type.add(name="Item")
        item.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        file.message_type.add(name=f"Only{package[0].upper()}")
        pool.Add(file)
    return pool


def test_component_names_are_short_unless_two_types_share_them() -> None:
    pool = _pool_with_two_packages()
    registry = SchemaRegistry(json_options=JsonOptions(), comments=Comments())
    document: dict[str, Any] = {
        "refs": [
            registry.message(pool.FindMessageTypeByName(name))
            for name in ("alpha.v1.Item", "beta.v1.Item", "alpha.v1.OnlyA")
        ]
    }
    registry.finish(document)
    assert sorted(document["components"]["schemas"]) == ["OnlyA", "alpha.v1.Item", "beta.v1.Item"]
    assert document["refs"][1] == {"$ref": "#/components/schemas/beta.v1.Item"}


def test_required_fields_must_not_be_empty() -> None:
    registry = SchemaRegistry(json_options=JsonOptions(), comments=Comments())
    text = chat_pb2.Message.DESCRIPTOR.fields_by_name["text"]
    assert field_behaviors(text) == frozenset({"REQUIRED"})
    assert registry.field(text)["minLength"] == 1
    attributes = chat_pb2.Message.DESCRIPTOR.fields_by_name["attributes"]
    assert "minProperties" not in registry.field(attributes)
