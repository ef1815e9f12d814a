"""Text values (path variables and query parameters) bound to protobuf fields.

A query parameter names a field by a dotted path of proto or JSON names (`nested.name`,
`nestedByName[key]` for a map entry) and gives its value as text. Scalars parse by field
type, enums by name or number, bytes from standard or URL-safe base64 (padding optional),
and the well-known types from their JSON string forms (Timestamp RFC 3339, Duration "1.5s",
FieldMask a comma list of camel or snake paths, wrappers as their scalar).

Invariants: every failure is a TranscodeError naming the parameter as the client wrote it;
a singular field or map key set twice, two members of one oneof, and a field that the path
or the body already binds are errors, never silent overwrites.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.fieldpath import (
    TranscodeError,
    descriptor_of,
    enum_type_of,
    is_map,
    is_message,
    is_repeated,
    message_type_of,
    mutable_parent,
    resolve,
)

__all__ = ["QueryOptions", "bind_query", "parse_text", "set_text"]

FieldPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """`reject_unknown`: a parameter that names no field is a 400 (else it is ignored)."""

    reject_unknown: bool = True


# ---------------------------------------------------------------- text → value

_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT32_MAX = 3.4028234663852886e38
_BOOLS = {
    **dict.fromkeys(("true", "True", "TRUE", "t", "T", "1"), True),
    **dict.fromkeys(("false", "False", "FALSE", "f", "F", "0"), False),
}
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _parse_integer(field: FieldDescriptor, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not an integer")
    low, high = _INT_RANGES[field.cpp_type]
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{text} is out of range [{low}, {high}]")
    return value


def _parse_float(field: FieldDescriptor, text: str) -> float:
    if text in _FLOAT_NAMES:
        return _FLOAT_NAMES[text]
    if not _FLOAT.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    value = float(text)
    if math.isinf(value) or (
        field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT and abs(value) > _FLOAT32_MAX
    ):
        raise ValueError(f"{text} is out of range")
    return value


def _parse_bool(_field: FieldDescriptor, text: str) -> bool:
    value = _BOOLS.get(text)
    if value is None:
        raise ValueError(f"{text!r} is not a boolean (true or false)")
    return value


def _parse_bytes(_field: FieldDescriptor, text: str) -> bytes:
    url_safe = "-" in text or "_" in text
    unpadded = text.rstrip("=")
    if len(unpadded) % 4 == 1:
        raise ValueError("not valid base64")
    padded = unpadded + "=" * (-len(unpadded) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64 (standard or URL-safe)") from None


def _parse_enum(field: FieldDescriptor, text: str) -> int:
    enum_type = enum_type_of(field)
    by_name = enum_type.values_by_name.get(text)
    if by_name is not None:
        return by_name.number
    if _INTEGER.fullmatch(text) and int(text) in enum_type.values_by_number:
        return int(text)
    raise ValueError(f"{text!r} is not a value of {enum_type.full_name}")


def _parse_string(_field: FieldDescriptor, text: str) -> str:
    return text


_Parser = Callable[[FieldDescriptor, str], Any]
_PARSERS: dict[int, _Parser] = {
    FieldDescriptor.CPPTYPE_INT32: _parse_integer,
    FieldDescriptor.CPPTYPE_INT64: _parse_integer,
    FieldDescriptor.CPPTYPE_UINT32: _parse_integer,
    FieldDescriptor.CPPTYPE_UINT64: _parse_integer,
    FieldDescriptor.CPPTYPE_FLOAT: _parse_float,
    FieldDescriptor.CPPTYPE_DOUBLE: _parse_float,
    FieldDescriptor.CPPTYPE_BOOL: _parse_bool,
    FieldDescriptor.CPPTYPE_ENUM: _parse_enum,
    FieldDescriptor.CPPTYPE_STRING: _parse_string,
}


def parse_text(field: FieldDescriptor, text: str) -> Any:
    """The value of scalar or enum `field` written as `text`; ValueError says why not."""
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _parse_bytes(field, text)
    return _PARSERS[field.cpp_type](field, text)


# ---------------------------------------------------------------- well-known types from text

_CAMEL_HUMP = re.compile(r"[A-Z]")


def _mask_path(text: str) -> str:
    return _CAMEL_HUMP.sub(lambda hump: "_" + hump.group().lower(), text)


def _fill_field_mask(mask: Any, text: str) -> None:
    mask.paths.extend(_mask_path(path.strip()) for path in text.split(",") if path.strip())


def _fill_from_json_string(message: Any, text: str) -> None:
    message.FromJsonString(text)


_WELL_KNOWN: dict[str, Callable[[Any, str], None]] = {
    "google.protobuf.Timestamp": _fill_from_json_string,
    "google.protobuf.Duration": _fill_from_json_string,
    "google.protobuf.FieldMask": _fill_field_mask,
}


def _text_settable(field: FieldDescriptor) -> bool:
    if not is_message(field):
        return True
    message_type = message_type_of(field)
    return message_type.full_name in _WELL_KNOWN or _is_wrapper(message_type)


def _is_wrapper(descriptor: Descriptor) -> bool:
    return descriptor.file.name == "google/protobuf/wrappers.proto"


def _fill_message(message: Any, text: str) -> None:
    descriptor = descriptor_of(message)
    if _is_wrapper(descriptor):
        message.value = parse_text(descriptor.fields_by_name["value"], text)
    else:
        _WELL_KNOWN[descriptor.full_name](message, text)


# ---------------------------------------------------------------- setting fields


def set_text(
    message: Message,
    fields: Sequence[FieldDescriptor],
    text: str,
    *,
    map_key: str | None = None,
    replace: bool = False,
) -> None:
    """Set the field at `fields` from `text`: append to a repeated field (after clearing it
    when `replace`), set one entry of a map, or set a singular field. Raises ValueError."""
    field = fields[-1]
    parent = mutable_parent(message, fields)
    if map_key is not None:
        entry = message_type_of(field)
        key = parse_text(entry.fields_by_name["key"], map_key)
        getattr(parent, field.name)[key] = parse_text(entry.fields_by_name["value"], text)
    elif is_repeated(field):
        container = getattr(parent, field.name)
        if replace:
            del container[:]
        if is_message(field):
            _fill_message(container.add(), text)
        else:
            container.append(parse_text(field, text))
    elif is_message(field):
        target = getattr(parent, field.name)
        target.Clear()
        _fill_message(target, text)
    else:
        setattr(parent, field.name, parse_text(field, text))


# ---------------------------------------------------------------- query binding

_PARAMETER = re.compile(r"(?P<path>[^\[\]]+)(?:\[(?P<key>[^\[\]]*)\])?")


@dataclass(slots=True)
class _Target:
    parameter: str
    fields: tuple[FieldDescriptor, ...]
    map_key: str | None

    @property
    def proto_path(self) -> FieldPath:
        return tuple(field.name for field in self.fields)


def bind_query(
    message: Message,
    query: Sequence[tuple[str, str]],
    *,
    path_bound: Sequence[FieldPath],
    body_bound: FieldPath | None,
    options: QueryOptions,
) -> None:
    """Set the fields of `message` named by `query`. `path_bound` lists the proto-name field
    paths bound by path variables; `body_bound` the one bound by the body (`()` for "*",
    None for no body). Parameters touching those are errors."""
    seen: dict[FieldPath | tuple[FieldPath, str], str] = {}
    for parameter, text in query:
        target = _target(descriptor_of(message), parameter, options)
        if target is None:
            continue
        _check_unbound(target, path_bound, body_bound)
        _check_once(target, seen)
        _check_oneofs(message, target)
        try:
            set_text(message, target.fields, text, map_key=target.map_key)
        except ValueError as exc:
            raise TranscodeError(
                f"invalid value for query parameter {parameter!r}: {exc}", field=parameter
            ) from None


def _target(descriptor: Descriptor, parameter: str, options: QueryOptions) -> _Target | None:
    match = _PARAMETER.fullmatch(parameter)
    fields = resolve(descriptor, match["path"].split(".")) if match else None
    if match is None or fields is None:
        if options.reject_unknown:
            raise TranscodeError(
                f"unknown query parameter {parameter!r}: {descriptor.full_name} has no such field",
                field=parameter,
            )
        return None
    target = _Target(parameter, fields, match["key"])
    _check_settable(target)
    return target


def _check_settable(target: _Target) -> None:
    field = target.fields[-1]
    if target.map_key is not None:
        ok = is_map(field) and not is_message(message_type_of(field).fields_by_name["value"])
    else:
        ok = not is_map(field) and _text_settable(field)
    if not ok:
        what = "a map entry of scalars" if target.map_key is not None else "a scalar field"
        raise TranscodeError(
            f"query parameter {target.parameter!r} cannot be set from a query string "
            f"(it is not {what})",
            field=target.parameter,
        )


def _check_unbound(
    target: _Target, path_bound: Sequence[FieldPath], body: FieldPath | None
) -> None:
    path = target.proto_path
    for other, where in [*((bound, "path") for bound in path_bound), (body, "request body")]:
        if other is not None and (path[: len(other)] == other or other[: len(path)] == path):
            raise TranscodeError(
                f"query parameter {target.parameter!r} sets a field already bound by the {where}",
                field=target.parameter,
            )


def _check_once(target: _Target, seen: dict[FieldPath | tuple[FieldPath, str], str]) -> None:
    field = target.fields[-1]
    if is_repeated(field) and target.map_key is None:
        return
    key: FieldPath | tuple[FieldPath, str] = target.proto_path
    if target.map_key is not None:
        key = (target.proto_path, target.map_key)
    if key in seen:
        raise TranscodeError(
            f"query parameter {target.parameter!r} is given more than once",
            field=target.parameter,
        )
    seen[key] = target.parameter


def _check_oneofs(message: Message, target: _Target) -> None:
    parent: Any = message
    for field in target.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            chosen = parent.WhichOneof(oneof.name)
            if chosen is not None and chosen != field.name:
                raise TranscodeError(
                    f"query parameter {target.parameter!r} sets {field.name}, but {chosen} of "
                    f"the same oneof {oneof.name} is already set",
                    field=target.parameter,
                )
        if is_message(field) and not is_repeated(field):
            if not parent.HasField(field.name):
                return
            parent = getattr(parent, field.name)
