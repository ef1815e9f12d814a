"""A fast path for parsing proto3 JSON (already decoded by orjson) into a message.

`json_format.ParseDict` is the reference; this module handles the common, unambiguous
inputs (plain JSON types of the expected kind) with per-(Descriptor, option) tables built
once, and gives up — raising `Unsupported` — on anything else: an unexpected type, a
string number, an unknown key when unknown keys are rejected, a second member of a oneof,
extensions, deep nesting. The caller then parses with json_format from scratch, so errors
and edge cases behave exactly as json_format's.

Invariant: whenever this module completes, the message equals what ParseDict would give.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.fieldpath import descriptor_of, enum_type_of, is_map, message_type_of

__all__ = ["Unsupported", "fast_parse"]


class Unsupported(Exception):
    """The input needs json_format's full treatment."""


_Convert = Callable[[Any], Any]
_Apply = Callable[[Message, Any, int], None]
_MAX_DEPTH = 90  # json_format refuses 100 levels; leave that error to it
_INTEGER = re.compile(r"-?[0-9]+")
_EXTENSION_KEY = re.compile(r"\[[a-zA-Z0-9._]*\]")
_FLOAT_MAX = 3.4028234663852886e38  # the bound json_format checks float32 values against
_DELEGATED = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
    }
)


def _delegated(descriptor: Descriptor) -> bool:
    return (
        descriptor.full_name in _DELEGATED
        or descriptor.file.name == "google/protobuf/wrappers.proto"
    )


class _Table:
    """Per (message type, ignore_unknown): JSON key → how to apply its value."""

    __slots__ = ("appliers", "ignore_unknown")

    def __init__(self, ignore_unknown: bool) -> None:
        self.ignore_unknown = ignore_unknown
        self.appliers: dict[str, tuple[FieldDescriptor, _Apply]] = {}


_tables: dict[tuple[Descriptor, bool], _Table] = {}


def _table(descriptor: Descriptor, ignore_unknown: bool) -> _Table:
    key = (descriptor, ignore_unknown)
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = _Table(ignore_unknown)
        for field in descriptor.fields:
            applier = (field, _applier(field, ignore_unknown))
            table.appliers[field.name] = applier
            table.appliers[field.json_name] = applier
    return table


def fast_parse(value: Any, message: Message, ignore_unknown: bool, depth: int = 0) -> None:
    """Merge JSON object `value` into `message`, or raise Unsupported (message then dirty)."""
    if type(value) is not dict or depth > _MAX_DEPTH:
        raise Unsupported
    table = _table(descriptor_of(message), ignore_unknown)
    oneofs: set[str] = set()
    for key, item in value.items():
        entry = table.appliers.get(key)
        if entry is None:
            if not ignore_unknown or _EXTENSION_KEY.fullmatch(key):
                raise Unsupported
            continue
        field, apply = entry
        if item is None:
            _apply_null(message, field)
            continue
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in oneofs:
                raise Unsupported
            oneofs.add(oneof.name)
        apply(message, item, depth)


def _apply_null(message: Message, field: FieldDescriptor) -> None:
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.Value":
        raise Unsupported
    if field.enum_type is not None and field.enum_type.full_name == "google.protobuf.NullValue":
        raise Unsupported
    message.ClearField(field.name)


def _applier(field: FieldDescriptor, ignore_unknown: bool) -> _Apply:
    name = field.name
    if is_map(field):
        return _map_applier(field, ignore_unknown)
    element = _element(field, ignore_unknown)
    if field.is_repeated:

        def apply_repeated(message: Message, value: Any, depth: int) -> None:
            if type(value) is not list:
                raise Unsupported
            message.ClearField(name)
            container = getattr(message, name)
            for item in value:
                element(container, item, depth)

        return apply_repeated
    if field.message_type is not None:
        sub_type = field.message_type

        def apply_message(message: Message, value: Any, depth: int) -> None:
            sub = getattr(message, name)
            sub.SetInParent()
            _parse_message(value, sub, sub_type, ignore_unknown, depth + 1)

        return apply_message
    convert = _scalar(field)

    def apply_scalar(message: Message, value: Any, _depth: int) -> None:
        try:
            setattr(message, name, convert(value))
        except (ValueError, TypeError):
            raise Unsupported from None

    return apply_scalar


def _parse_message(
    value: Any, message: Message, descriptor: Descriptor, ignore_unknown: bool, depth: int
) -> None:
    if not _delegated(descriptor):
        fast_parse(value, message, ignore_unknown, depth)
        return
    try:
        json_format.ParseDict(
            value,
            message,
            ignore_unknown_fields=ignore_unknown,
            descriptor_pool=descriptor_of(message).file.pool,
        )
    except Exception:  # any failure: json_format will report it from the top
        raise Unsupported from None


def _element(field: FieldDescriptor, ignore_unknown: bool) -> Callable[[Any, Any, int], None]:
    """How to append one JSON array item to the repeated container of `field`."""
    if field.message_type is not None:
        sub_type = field.message_type

        def add_message(container: Any, item: Any, depth: int) -> None:
            if item is None:
                raise Unsupported
            _parse_message(item, container.add(), sub_type, ignore_unknown, depth + 1)

        return add_message
    convert = _scalar(field)

    def add_scalar(container: Any, item: Any, _depth: int) -> None:
        try:
            container.append(convert(item))
        except (ValueError, TypeError):
            raise Unsupported from None

    return add_scalar


def _map_applier(field: FieldDescriptor, ignore_unknown: bool) -> _Apply:
    name = field.name
    entry = message_type_of(field)
    convert_key = _map_key(entry.fields_by_name["key"])
    set_entry = _map_value_setter(entry.fields_by_name["value"], ignore_unknown)

    def apply_map(message: Message, value: Any, depth: int) -> None:
        if type(value) is not dict:
            raise Unsupported
        message.ClearField(name)
        container = getattr(message, name)
        for key, item in value.items():
            set_entry(container, convert_key(key), item, depth)

    return apply_map


def _map_value_setter(
    field: FieldDescriptor, ignore_unknown: bool
) -> Callable[[Any, Any, Any, int], None]:
    value_type = field.message_type
    if value_type is not None:

        def set_message(container: Any, key: Any, item: Any, depth: int) -> None:
            _parse_message(item, container[key], value_type, ignore_unknown, depth + 1)

        return set_message
    convert = _scalar(field)

    def set_scalar(container: Any, key: Any, item: Any, _depth: int) -> None:
        try:
            container[key] = convert(item)
        except (ValueError, TypeError):
            raise Unsupported from None

    return set_scalar


def _map_key(field: FieldDescriptor) -> _Convert:
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return _identity
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return _bool_key
    return _string_integer


def _identity(value: Any) -> Any:
    return value


def _bool_key(key: str) -> bool:
    if key == "true":
        return True
    if key == "false":
        return False
    raise Unsupported


def _string_integer(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise Unsupported
    return int(text)


# ---------------------------------------------------------------- scalars


def _scalar(field: FieldDescriptor) -> _Convert:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return _bytes if field.type == FieldDescriptor.TYPE_BYTES else _string
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return _bool
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return _enum(field)
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        return _float32
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    return _integer


def _string(value: Any) -> str:
    if type(value) is not str:
        raise Unsupported
    return value


def _bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise Unsupported
    encoded = value.encode("utf-8")
    return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise Unsupported
    return value


def _integer(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is str and _INTEGER.fullmatch(value):
        return int(value)
    raise Unsupported


def _double(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return float(value)
    if kind is int and -(2**53) <= value <= 2**53:
        return float(value)
    raise Unsupported


def _float32(value: Any) -> float:
    number = _double(value)
    if not -_FLOAT_MAX <= number <= _FLOAT_MAX:
        raise Unsupported
    return number


def _enum(field: FieldDescriptor) -> _Convert:
    enum_type = enum_type_of(field)
    by_name = {value.name: value.number for value in enum_type.values}
    numbers = frozenset(value.number for value in enum_type.values)

    def convert(value: Any) -> int:
        kind = type(value)
        if kind is str:
            number = by_name.get(value)
            if number is not None:
                return number
        elif kind is int and value in numbers:
            return int(value)
        raise Unsupported

    return convert
