"""The transcoder: HTTP request pieces → request message, message → JSON response bytes.

Sans-IO: takes what the bridge read (path bindings from the route match, query pairs, body
bytes) and returns messages or bytes. The proto3 JSON mapping lives in `gateway.jsonmap`,
query and path value parsing in `gateway.query`, error bodies in `gateway.status`; this
module applies google.api.HttpRule semantics on top:

- body "*": the body is the request message; body "<field>": the body is that field's JSON
  value (object, array or scalar); no body: an empty body, whitespace or `{}` is accepted,
  anything else is a 400 (the data would otherwise be lost silently).
- Path variables are applied after the body, so a path value wins over the body's.
- Query parameters fill the fields neither the path nor the body binds.
- PATCH to a request with a FieldMask `update_mask`, a message body field and no mask sent:
  the mask is derived from the body's JSON keys (dotted for nested objects; a map, a
  well-known type, a repeated field or an empty object ends a path).
- A google.api.HttpBody request (body "*") or body field receives the raw bytes and the
  content type; `http_body_response` returns a response HttpBody's bytes and content type.

Invariant: every problem with the client's input raises TranscodeError, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.fieldpath import (
    TranscodeError,
    descriptor_of,
    fields_by_name,
    is_map,
    is_message,
    is_repeated,
    message_type_of,
    mutable_parent,
    resolve,
)
from gateway.jsonmap import (
    JsonOptions,
    decode_json,
    decode_json_message,
    encode_json,
    field_to_json,
    message_to_json,
    parse_into,
)
from gateway.query import FieldPath, QueryOptions, bind_query, set_text
from gateway.status import (
    http_status_for,
    status_from_grpc_error,
    status_from_parts,
    status_json,
    status_to_json,
    transcode_error_status,
)

__all__ = [
    "HTTP_BODY",
    "HttpBodyResponse",
    "JsonOptions",
    "QueryOptions",
    "TranscodeError",
    "build_request",
    "decode_json_message",
    "derive_update_mask",
    "encode_message",
    "http_body_response",
    "http_status_for",
    "is_http_body",
    "message_to_json",
    "status_from_grpc_error",
    "status_from_parts",
    "status_json",
    "status_to_json",
    "transcode_error_status",
]

HTTP_BODY = "google.api.HttpBody"
_FIELD_MASK = "google.protobuf.FieldMask"
_UPDATE_MASK = "update_mask"
_EMPTY_BODIES = frozenset({b"", b"{}"})


def is_http_body(descriptor: Descriptor | None) -> bool:
    return descriptor is not None and descriptor.full_name == HTTP_BODY


def _body_fields(descriptor: Descriptor, body_field: str) -> tuple[FieldDescriptor, ...]:
    fields = resolve(descriptor, body_field.split("."))
    if fields is None:
        raise ValueError(f"body field {body_field!r} is not a field of {descriptor.full_name}")
    return fields


def build_request(
    descriptor: Descriptor,
    *,
    path_bindings: Sequence[tuple[tuple[str, ...], str]],
    query: Sequence[tuple[str, str]],
    body: bytes | None,
    body_field: str,
    content_type: str,
    http_method: str,
    options: JsonOptions,
    query_options: QueryOptions,
) -> Message:
    """The request message of type `descriptor` for one HTTP request (see the module doc)."""
    message = message_factory.GetMessageClass(descriptor)()
    body_json = _apply_body(message, body or b"", body_field, content_type, options)
    path_bound = _apply_path(message, path_bindings)
    body_bound: FieldPath | None = None
    if body_field == "*":
        body_bound = ()
    elif body_field:
        body_bound = tuple(f.name for f in _body_fields(descriptor, body_field))
    bind_query(message, query, path_bound=path_bound, body_bound=body_bound, options=query_options)
    if http_method.upper() == "PATCH" and body_bound and isinstance(body_json, dict):
        _derive_mask_if_missing(message, body_bound, body_json)
    return message


def _apply_body(
    message: Message, body: bytes, body_field: str, content_type: str, options: JsonOptions
) -> Any:
    """Merge the body into `message`; returns the parsed JSON (None when there is none)."""
    if not body_field:
        if body.strip() not in _EMPTY_BODIES:
            raise TranscodeError("this method takes no request body, but one was sent")
        return None
    if body_field == "*":
        return _apply_whole_body(message, body, content_type, options)
    fields = _body_fields(descriptor_of(message), body_field)
    field = fields[-1]
    parent = mutable_parent(message, fields)
    if is_http_body(field.message_type) and not is_repeated(field):
        _fill_http_body(getattr(parent, field.name), body, content_type)
        return None
    if not body.strip():
        return None
    value = decode_json(body)
    parse_into({field.name: value}, parent, options)
    return value


def _apply_whole_body(
    message: Message, body: bytes, content_type: str, options: JsonOptions
) -> Any:
    if is_http_body(descriptor_of(message)):
        _fill_http_body(message, body, content_type)
        return None
    if not body.strip():
        return None
    value = decode_json(body)
    parse_into(value, message, options)
    return value


def _fill_http_body(http_body: Any, body: bytes, content_type: str) -> None:
    http_body.content_type = content_type
    http_body.data = body


def _apply_path(
    message: Message, path_bindings: Sequence[tuple[tuple[str, ...], str]]
) -> list[FieldPath]:
    bound: list[FieldPath] = []
    for field_path, text in path_bindings:
        name = ".".join(field_path)
        fields = resolve(descriptor_of(message), field_path)
        if fields is None:
            raise ValueError(
                f"path variable {name!r} is not a field of {descriptor_of(message).full_name}"
            )
        try:
            set_text(message, fields, text, replace=True)
        except ValueError as exc:
            raise TranscodeError(
                f"invalid value for path variable {name!r}: {exc}", field=name
            ) from None
        bound.append(tuple(field.name for field in fields))
    return bound


# ---------------------------------------------------------------- PATCH update masks


def _derive_mask_if_missing(
    message: Message, body_bound: FieldPath, body_json: dict[str, Any]
) -> None:
    mask_field = descriptor_of(message).fields_by_name.get(_UPDATE_MASK)
    if mask_field is None or mask_field.message_type is None:
        return
    if mask_field.message_type.full_name != _FIELD_MASK or message.HasField(_UPDATE_MASK):
        return
    body = _body_fields(descriptor_of(message), ".".join(body_bound))[-1]
    if not is_message(body) or is_map(body) or is_repeated(body):
        return
    mask: Any = getattr(message, _UPDATE_MASK)
    mask.paths.extend(derive_update_mask(message_type_of(body), body_json))


def derive_update_mask(descriptor: Descriptor, body: dict[str, Any]) -> list[str]:
    """FieldMask paths (proto names) for the keys of `body`, a JSON object of `descriptor`:
    a non-empty object under a singular non-well-known message field gives dotted paths;
    anything else (scalar, array, map, well-known type, null, {}) ends the path. Keys that
    name no field are left out (they were ignored when parsing)."""
    paths: list[str] = []
    table = fields_by_name(descriptor)
    for key, value in body.items():
        field = table.get(key)
        if field is None:
            continue
        if _descends(field, value):
            nested = derive_update_mask(message_type_of(field), value)
            paths.extend(f"{field.name}.{path}" for path in nested)
        else:
            paths.append(field.name)
    return paths


def _descends(field: FieldDescriptor, value: Any) -> bool:
    if not (isinstance(value, dict) and value) or not is_message(field):
        return False
    if is_repeated(field) or is_map(field):
        return False
    return not message_type_of(field).full_name.startswith("google.protobuf.")


# ---------------------------------------------------------------- responses


class HttpBodyResponse(NamedTuple):
    data: bytes
    content_type: str


def _response_field(message: Message, response_body: str) -> FieldDescriptor:
    fields = resolve(descriptor_of(message), response_body.split("."))
    if fields is None or len(fields) != 1:
        raise ValueError(
            f"response_body {response_body!r} is not a top-level field of "
            f"{descriptor_of(message).full_name}"
        )
    return fields[0]


def encode_message(message: Message, *, response_body: str = "", options: JsonOptions) -> bytes:
    """JSON bytes of `message`, or of its `response_body` field when one is given."""
    if not response_body:
        return encode_json(message, options)
    field = _response_field(message, response_body)
    if is_message(field) and not is_repeated(field):
        return encode_json(getattr(message, field.name), options)
    return orjson.dumps(field_to_json(message, field, options))


def http_body_response(message: Message, *, response_body: str = "") -> HttpBodyResponse | None:
    """The raw bytes and content type when the response (or its response_body field) is a
    google.api.HttpBody; None when the response is to be printed as JSON."""
    target: Any = message
    if response_body:
        field = _response_field(message, response_body)
        if is_repeated(field) or not is_http_body(field.message_type):
            return None
        target = getattr(message, field.name)
    elif not is_http_body(descriptor_of(message)):
        return None
    return HttpBodyResponse(bytes(target.data), target.content_type or "application/octet-stream")
