"""The proto3 JSON mapping, both ways, producing and consuming bytes.

Printing gives exactly what `json_format.MessageToDict` gives (then serialized with orjson),
only faster: the per-field work (JSON key, value converter, enum names, defaults) is worked
out once per (Descriptor, JsonOptions) and kept in a `_Plan`. Parsing uses orjson for the
bytes and `gateway.jsonparse`'s fast path for the mapping, falling back to
`json_format.ParseDict` for anything unusual, so its rules and errors are json_format's.

Invariants:
- Printing never mutates the message; parsing only ever raises TranscodeError (whatever the
  bytes), with a message that says where (line/column, byte offset or field).
- An Any whose type the descriptor pool does not know prints as {"@type": url, "value": b64}
  instead of failing (json_format raises); every other output equals json_format's.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import DecodeError, Message

from gateway.fieldpath import (
    TranscodeError,
    descriptor_of,
    enum_type_of,
    is_map,
    message_type_of,
)
from gateway.jsonparse import Unsupported, fast_parse

__all__ = [
    "JsonOptions",
    "decode_json",
    "decode_json_message",
    "encode_json",
    "field_to_json",
    "message_to_json",
    "parse_into",
]

JsonValue = Any
_Converter = Callable[[Any], JsonValue]

_INT64_TYPES = frozenset(
    {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64},
)
_TIME_LIKE = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_WRAPPERS_FILE = "google/protobuf/wrappers.proto"
_WRAPPERS = ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
_SCALAR_JSON_TYPES = (
    _TIME_LIKE
    | {f"google.protobuf.{name}Value" for name in _WRAPPERS}
    | {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


@dataclass(frozen=True, slots=True)
class JsonOptions:
    """How messages print and parse. Defaults are grpc-gateway v2's default marshaler:
    lowerCamelCase keys, zero values printed, enums as names, unknown fields ignored."""

    use_proto_names: bool = False
    emit_unpopulated: bool = True
    enums_as_ints: bool = False
    ignore_unknown_fields: bool = True


# ---------------------------------------------------------------- printing


class _Plan:
    """What printing one message type needs, computed once per (Descriptor, JsonOptions)."""

    __slots__ = ("converters", "defaults", "options", "special")

    def __init__(self, options: JsonOptions) -> None:
        self.options = options
        self.converters: dict[FieldDescriptor, tuple[str, _Converter]] = {}
        self.defaults: list[tuple[str, FieldDescriptor]] = []
        self.special: _Converter | None = None

    def print_message(self, message: Message) -> JsonValue:
        if self.special is not None:
            return self.special(message)
        return self.print_fields(message)

    def print_fields(self, message: Message) -> dict[str, JsonValue]:
        js: dict[str, JsonValue] = {}
        converters = self.converters
        for field, value in message.ListFields():
            entry = converters.get(field)
            if entry is None:  # an extension
                entry = (f"[{field.full_name}]", _field_converter(field, self.options))
            js[entry[0]] = entry[1](value)
        for name, field in self.defaults:
            if name not in js:
                js[name] = _default_json(field, converters[field][1])
        return js


_plans: dict[tuple[Descriptor, JsonOptions], _Plan] = {}


def _plan(descriptor: Descriptor, options: JsonOptions) -> _Plan:
    key = (descriptor, options)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan(options)  # registered before filling: types recurse
        _fill_plan(plan, descriptor, options)
    return plan


def _fill_plan(plan: _Plan, descriptor: Descriptor, options: JsonOptions) -> None:
    plan.special = _special_printer(descriptor, options)
    if plan.special is not None:
        return
    for field in descriptor.fields:
        name = field.name if options.use_proto_names else field.json_name
        plan.converters[field] = (name, _field_converter(field, options))
        if options.emit_unpopulated and not field.has_presence:
            plan.defaults.append((name, field))


def _default_json(field: FieldDescriptor, convert: _Converter) -> JsonValue:
    if is_map(field):
        return {}
    if field.is_repeated:
        return []
    return convert(field.default_value)


def _field_converter(field: FieldDescriptor, options: JsonOptions) -> _Converter:
    convert = _value_converter(field, options)
    if is_map(field):
        value_convert = _value_converter(message_type_of(field).fields_by_name["value"], options)
        return lambda value: {_map_key(k): value_convert(value[k]) for k in value}
    if field.is_repeated:
        return lambda values: [convert(v) for v in values]
    return convert


def _map_key(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _value_converter(field: FieldDescriptor, options: JsonOptions) -> _Converter:
    cpp_type = field.cpp_type
    if cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        message_type = message_type_of(field)
        return lambda value: _plan(message_type, options).print_message(value)
    if cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return _enum_converter(field, options)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _print_bytes
    if cpp_type in _INT64_TYPES:
        return str
    if cpp_type == FieldDescriptor.CPPTYPE_FLOAT:
        return _print_float32
    if cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
        return _print_double
    return _identity


def _identity(value: JsonValue) -> JsonValue:
    return value


def _print_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _print_double(value: float) -> JsonValue:
    if math.isfinite(value):
        return value
    return _non_finite(value)


def _print_float32(value: float) -> JsonValue:
    if math.isfinite(value):
        return type_checkers.ToShortestFloat(value)
    return _non_finite(value)


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def _enum_converter(field: FieldDescriptor, options: JsonOptions) -> _Converter:
    enum_type = enum_type_of(field)
    if options.enums_as_ints:
        return _identity
    if enum_type.full_name == "google.protobuf.NullValue":
        return lambda _value: None
    names = {value.number: value.name for value in reversed(enum_type.values)}
    if not enum_type.is_closed:
        return lambda number: names.get(number, number)

    def closed(number: int) -> str:
        name = names.get(number)
        if name is None:
            raise json_format.SerializeToJsonError(
                f"Enum field {field.full_name} contains {number}, not a value of "
                f"{enum_type.full_name}"
            )
        return name

    return closed


def _special_printer(
    descriptor: Descriptor, options: JsonOptions
) -> Callable[[Message], JsonValue] | None:
    full_name = descriptor.full_name
    if descriptor.file.name == _WRAPPERS_FILE:
        inner = _value_converter(descriptor.fields_by_name["value"], options)
        return lambda message: inner(message.value)  # type: ignore[attr-defined]  # wrapper type
    if full_name == "google.protobuf.Timestamp":
        return print_timestamp
    if full_name in _TIME_LIKE:
        return lambda message: message.ToJsonString()  # type: ignore[attr-defined]  # WKT mixin
    if full_name == "google.protobuf.Struct":
        return _print_struct
    if full_name == "google.protobuf.ListValue":
        return _print_list_value
    if full_name == "google.protobuf.Value":
        return _print_value
    if full_name == "google.protobuf.Any":
        return lambda message: _print_any(message, options)
    return None


_SECOND_TEXTS: dict[int, str] = {}  # seconds since the epoch → "YYYY-MM-DDTHH:MM:SS"
_SECOND_TEXTS_MAX = 4096


def print_timestamp(message: Any) -> str:
    """``Timestamp.ToJsonString()``'s text (and its ValueError for an invalid value), with the
    date and time of each second formatted once: messages printed together share seconds."""
    seconds, nanos = message.seconds, message.nanos
    head = _SECOND_TEXTS.get(seconds)
    if head is None or not 0 <= nanos < 1_000_000_000:
        text: str = message.ToJsonString()  # validates, and is the reference
        if len(_SECOND_TEXTS) >= _SECOND_TEXTS_MAX:
            _SECOND_TEXTS.clear()
        _SECOND_TEXTS[seconds] = text[:19]
        return text
    if nanos == 0:
        return head + "Z"
    if nanos % 1_000_000 == 0:
        return f"{head}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{head}.{nanos // 1_000:06d}Z"
    return f"{head}.{nanos:09d}Z"


def _print_value(message: Any) -> JsonValue:
    kind = message.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return _print_struct(message.struct_value)
    if kind == "list_value":
        return _print_list_value(message.list_value)
    if kind == "number_value":
        number = message.number_value
        if not math.isfinite(number):
            raise json_format.SerializeToJsonError(
                f"Fail to serialize {number} for Value.number_value, which would parse as "
                "string_value"
            )
        return number
    return getattr(message, kind)


def _print_struct(message: Any) -> dict[str, JsonValue]:
    fields = message.fields
    return {key: _print_value(fields[key]) for key in fields}


def _print_list_value(message: Any) -> list[JsonValue]:
    return [_print_value(value) for value in message.values]


def _print_any(message: Any, options: JsonOptions) -> JsonValue:
    if not message.ListFields():
        return {}
    type_url: str = message.type_url
    packed = _unpack_any(message)
    if packed is None:
        return {"@type": type_url, "value": _print_bytes(message.value)}
    plan = _plan(descriptor_of(packed), options)
    if plan.special is not None:
        return {"@type": type_url, "value": plan.special(packed)}
    return {"@type": type_url, **plan.print_fields(packed)}


def _unpack_any(message: Any) -> Message | None:
    """The message inside an Any, or None when no pool we can see knows its type."""
    type_name = message.type_url.rpartition("/")[2]
    for pool in (descriptor_of(message).file.pool, descriptor_pool.Default()):
        try:
            descriptor = pool.FindMessageTypeByName(type_name)
        except KeyError:
            continue
        packed = message_factory.GetMessageClass(descriptor)()
        try:
            packed.ParseFromString(message.value)
        except DecodeError:
            return None
        return packed
    return None


def message_to_json(message: Message, options: JsonOptions) -> JsonValue:
    """`message` as a JSON value (dict, or str/list/... for well-known types)."""
    return _plan(descriptor_of(message), options).print_message(message)


def field_to_json(message: Message, field: FieldDescriptor, options: JsonOptions) -> JsonValue:
    """The JSON value of one field of `message` (an unset message field prints as its default)."""
    value = getattr(message, field.name)
    return _field_converter(field, options)(value)


def encode_json(message: Message, options: JsonOptions) -> bytes:
    """`message` as JSON bytes, equal to orjson.dumps(json_format.MessageToDict(...))."""
    return orjson.dumps(message_to_json(message, options))


# ---------------------------------------------------------------- parsing


def decode_json(data: bytes) -> JsonValue:
    """Parse JSON bytes; TranscodeError says where the document breaks."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TranscodeError(_json_error_text(data, exc)) from None


def _json_error_text(data: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"request body is not valid UTF-8 at byte offset {bad.start}"
    if "surrogates" in exc.msg:
        return f"request body is not valid JSON: {exc.msg}"
    return (
        f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
        f"(byte offset {len(data.decode('utf-8')[: exc.pos].encode('utf-8'))})"
    )


_FIELD_IN_ERROR = re.compile(r"Failed to parse (\S+) field")
_UNKNOWN_IN_ERROR = re.compile(r'has no field named "([^"]*)"')


def parse_into(value: JsonValue, message: Message, options: JsonOptions) -> None:
    """Merge a parsed JSON object into `message` with the proto3 JSON mapping."""
    full_name = descriptor_of(message).full_name
    if not isinstance(value, dict) and full_name not in _SCALAR_JSON_TYPES:
        raise TranscodeError(f"expected a JSON object for {full_name}, got {_json_kind(value)}")
    if not message.ListFields():
        try:
            fast_parse(value, message, options.ignore_unknown_fields)
        except Unsupported:
            message.Clear()
        else:
            return
    try:
        json_format.ParseDict(
            value,
            message,
            ignore_unknown_fields=options.ignore_unknown_fields,
            descriptor_pool=descriptor_of(message).file.pool,
        )
    except RecursionError:
        raise TranscodeError("request body is nested too deeply") from None
    except (json_format.ParseError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise _parse_error(exc) from None


def _parse_error(exc: Exception) -> TranscodeError:
    text = str(exc)
    names = _FIELD_IN_ERROR.findall(text)
    names.extend(_UNKNOWN_IN_ERROR.findall(text))
    detail = text.split("\n", 1)[0].rstrip(".")
    return TranscodeError(f"invalid request body: {detail}", field=".".join(names))


def _json_kind(value: JsonValue) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def decode_json_message(descriptor: Descriptor, data: bytes, options: JsonOptions) -> Message:
    """One JSON document (e.g. a streaming frame) as a message of type `descriptor`."""
    message = message_factory.GetMessageClass(descriptor)()
    parse_into(decode_json(data), message, options)
    return message
