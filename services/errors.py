"""The one place engine errors become gRPC statuses, and request validation.

Every handler runs its body inside ``async with status_on_error(context, resource=…)``:
an ``EngineError`` raised there (by the engine or by the validators below) aborts the
RPC with the mapped code and a ``google.rpc.Status`` in ``grpc-status-details-bin``:

=====================  ===================  ==================================
error                  gRPC code            detail
=====================  ===================  ==================================
InvalidArgument        INVALID_ARGUMENT     BadRequest (field, description)
NotFound               NOT_FOUND            ResourceInfo
AlreadyExists          ALREADY_EXISTS       ResourceInfo
EtagMismatch           FAILED_PRECONDITION  PreconditionFailure (type ETAG)
EpochChanged           FAILED_PRECONDITION  PreconditionFailure (type EPOCH)
PermissionDenied       PERMISSION_DENIED    ErrorInfo
CursorAhead            OUT_OF_RANGE         BadRequest (the cursor field)
SubscriberOverflow     RESOURCE_EXHAUSTED   ErrorInfo
EngineClosed           UNAVAILABLE          ErrorInfo
=====================  ===================  ==================================

Validators raise ``InvalidArgument`` whose message names the field and the value.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.engine import (
    AlreadyExists,
    CursorAhead,
    EngineClosed,
    EngineError,
    EtagMismatch,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SubscriberOverflow,
)

ERROR_DOMAIN = "switchboard.dev"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_DISPLAY_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
MAX_LABELS = 64
MAX_LABEL_CHARS = 63
MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_KEY_CHARS = 63
MAX_ATTRIBUTE_VALUE_CHARS = 1024
MAX_REQUEST_ID_CHARS = 128
MAX_MESSAGE_ID_CHARS = 128

_ROOM_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MESSAGE_ID_RE = re.compile(r"^[A-Za-z0-9_.~-]+$")


class EpochChanged(EngineError):
    """A page token belongs to an epoch the room's history has left."""


# ---------------------------------------------------------------------------
# engine errors → google.rpc.Status


def _bad_request(error: EngineError, resource: str) -> ProtoMessage:
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=error.field, description=error.message
    )
    return error_details_pb2.BadRequest(field_violations=[violation])


def _resource_info(error: EngineError, resource: str) -> ProtoMessage:
    kind = "switchboard.v1.Message" if "/messages/" in resource else "switchboard.v1.Room"
    return error_details_pb2.ResourceInfo(
        resource_type=kind, resource_name=resource, description=error.message
    )


def _precondition(kind: str) -> Callable[[EngineError, str], ProtoMessage]:
    def detail(error: EngineError, resource: str) -> ProtoMessage:
        violation = error_details_pb2.PreconditionFailure.Violation(
            type=kind, subject=resource, description=error.message
        )
        return error_details_pb2.PreconditionFailure(violations=[violation])

    return detail


def _error_info(reason: str) -> Callable[[EngineError, str], ProtoMessage]:
    def detail(error: EngineError, resource: str) -> ProtoMessage:
        metadata = {"resource": resource} if resource else {}
        return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)

    return detail


_Detail = Callable[[EngineError, str], ProtoMessage]
_MAPPING: Mapping[type, tuple[grpc.StatusCode, _Detail]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, _bad_request),
    NotFound: (grpc.StatusCode.NOT_FOUND, _resource_info),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, _resource_info),
    EtagMismatch: (grpc.StatusCode.FAILED_PRECONDITION, _precondition("ETAG")),
    EpochChanged: (grpc.StatusCode.FAILED_PRECONDITION, _precondition("EPOCH")),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, _error_info("PERMISSION_DENIED")),
    CursorAhead: (grpc.StatusCode.OUT_OF_RANGE, _bad_request),
    SubscriberOverflow: (grpc.StatusCode.RESOURCE_EXHAUSTED, _error_info("SUBSCRIBER_OVERFLOW")),
    EngineClosed: (grpc.StatusCode.UNAVAILABLE, _error_info("ENGINE_CLOSED")),
}


def code_for(error: EngineError) -> grpc.StatusCode:
    return _lookup(error)[0]


def _lookup(error: EngineError) -> tuple[grpc.StatusCode, _Detail]:
    for cls in type(error).__mro__:
        if cls in _MAPPING:
            return _MAPPING[cls]
    return grpc.StatusCode.INTERNAL, _error_info("INTERNAL")


def status_proto(error: EngineError, *, resource: str = "") -> status_pb2.Status:
    """The google.rpc.Status for ``error``; ``resource`` names what the call addressed."""
    code, detail = _lookup(error)
    packed = any_pb2.Any()
    packed.Pack(detail(error, resource))
    return status_pb2.Status(code=code.value[0], message=error.message, details=[packed])


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: EngineError, *, resource: str = ""
) -> NoReturn:
    """Ends the RPC with the status mapped from ``error`` (details included)."""
    status = rpc_status.to_status(status_proto(error, resource=resource))
    # Same as context.abort_with_status(status), which grpc-stubs does not declare for aio.
    await context.abort(status.code, status.details, status.trailing_metadata)


@asynccontextmanager
async def status_on_error(
    context: grpc.aio.ServicerContext[Any, Any], *, resource: str = ""
) -> AsyncIterator[None]:
    """Maps an EngineError escaping the block to the RPC's status."""
    try:
        yield
    except EngineError as error:
        await abort(context, error, resource=resource)


# ---------------------------------------------------------------------------
# request validation


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def invalid(field: str, value: object, problem: str) -> InvalidArgument:
    """An InvalidArgument saying ``field`` ``value`` ``problem``."""
    return InvalidArgument(f"{field} {_show(value)} {problem}", field=field)


def require(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    return value


def is_room_id(text: str) -> bool:
    return _ROOM_ID_RE.fullmatch(text) is not None


def check_room_id(room_id: str, field: str = "room_id") -> str:
    require(field, room_id)
    if not _ROOM_ID_RE.fullmatch(room_id):
        raise invalid(
            field,
            room_id,
            "is not a room id: use 1 to 63 lowercase letters, digits and hyphens, "
            "starting with a letter or digit and not ending with a hyphen",
        )
    return room_id


def parse_room_name(name: str, field: str) -> str:
    """``rooms/{room_id}`` → room_id."""
    require(field, name)
    prefix, _, room_id = name.partition("/")
    if prefix != "rooms" or not _ROOM_ID_RE.fullmatch(room_id):
        raise invalid(field, name, "is not a room name of the form rooms/{room_id}")
    return room_id


def parse_message_name(name: str, field: str) -> tuple[str, str]:
    """``rooms/{room_id}/messages/{message_id}`` → (room_id, message_id)."""
    require(field, name)
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != "rooms"
        or parts[2] != "messages"
        or not _ROOM_ID_RE.fullmatch(parts[1])
        or not _MESSAGE_ID_RE.fullmatch(parts[3])
        or len(parts[3]) > MAX_MESSAGE_ID_CHARS
    ):
        raise invalid(
            field, name, "is not a message name of the form rooms/{room_id}/messages/{message_id}"
        )
    return parts[1], parts[3]


def check_text(text: str, field: str, *, max_bytes: int) -> str:
    require(field, text)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidArgument(
            f"{field} is {size} bytes of UTF-8; the limit is {max_bytes}", field=field
        )
    return text


def check_length(value: str, field: str, *, max_chars: int) -> str:
    if len(value) > max_chars:
        raise invalid(field, value, f"is {len(value)} characters; the limit is {max_chars}")
    return value


def check_labels(labels: Mapping[str, str], field: str = "room.labels") -> dict[str, str]:
    return _check_map(labels, field, MAX_LABELS, MAX_LABEL_CHARS, MAX_LABEL_CHARS)


def check_attributes(
    attributes: Mapping[str, str], field: str = "message.attributes"
) -> dict[str, str]:
    return _check_map(
        attributes, field, MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_CHARS, MAX_ATTRIBUTE_VALUE_CHARS
    )


def _check_map(
    entries: Mapping[str, str], field: str, max_entries: int, max_key: int, max_value: int
) -> dict[str, str]:
    if len(entries) > max_entries:
        raise InvalidArgument(
            f"{field} has {len(entries)} entries; the limit is {max_entries}", field=field
        )
    for key, value in entries.items():
        if not key or len(key) > max_key:
            raise invalid(f"{field}[{key!r}]", key, f"must be a key of 1 to {max_key} characters")
        check_length(value, f"{field}[{key!r}]", max_chars=max_value)
    return dict(entries)


def check_request_id(request_id: str, field: str = "request_id") -> str:
    return check_length(request_id, field, max_chars=MAX_REQUEST_ID_CHARS)


def page_size(value: int, field: str = "page_size") -> int:
    """0 → the default (50), above the maximum → the maximum (1000), negative → error."""
    if value < 0:
        raise invalid(field, value, "must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)
