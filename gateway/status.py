"""gRPC status → HTTP: the status code table and google.rpc.Status JSON bodies.

Every error the gateway answers is a google.rpc.Status printed as JSON:
`{"code": int, "message": str, "details": [{"@type": url, ...}]}` — `code` is the gRPC code
number, `details` are Any messages printed with the proto3 JSON mapping (an Any whose type
is unknown prints as {"@type": url, "value": base64}). Invariant: this module never fails on
what a backend sends; malformed `grpc-status-details-bin` is dropped, not raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import grpc
import orjson
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.fieldpath import TranscodeError
from gateway.jsonmap import JsonOptions, message_to_json

__all__ = [
    "DETAILS_METADATA_KEY",
    "RpcErrorLike",
    "http_status_for",
    "status_from_grpc_error",
    "status_from_parts",
    "status_json",
    "status_to_json",
    "transcode_error_status",
]

DETAILS_METADATA_KEY = "grpc-status-details-bin"

_HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}
_DETAILS_OPTIONS = JsonOptions(emit_unpopulated=False)

Metadata = Iterable[tuple[str, str | bytes]]


class RpcErrorLike(Protocol):
    """What grpc.aio.AioRpcError (and grpc.RpcError from a call) offer."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Metadata | None: ...


def _code_number(code: grpc.StatusCode | int) -> int:
    if isinstance(code, grpc.StatusCode):
        number: int = code.value[0]
        return number
    return int(code)


def http_status_for(code: grpc.StatusCode | int) -> int:
    """The HTTP status for a gRPC code (the table grpc-gateway and Envoy share); 500 if unknown."""
    return _HTTP_STATUS.get(_code_number(code), 500)


def _as_any(detail: Message) -> any_pb2.Any:
    if isinstance(detail, any_pb2.Any):
        return detail
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def status_json(
    code: grpc.StatusCode | int, message: str, details: Sequence[Message] = ()
) -> bytes:
    """A google.rpc.Status JSON body. `details` are Any messages or messages to pack."""
    return orjson.dumps(
        {
            "code": _code_number(code),
            "message": message,
            "details": [message_to_json(_as_any(d), _DETAILS_OPTIONS) for d in details],
        }
    )


def status_to_json(status: status_pb2.Status) -> bytes:
    """`status` as its JSON body (always with the three keys)."""
    return status_json(status.code, status.message, list(status.details))


def status_from_parts(
    code: grpc.StatusCode | int, message: str | None, trailing_metadata: Metadata | None
) -> status_pb2.Status:
    """The Status of a failed call: its code and message, with the details of a well-formed
    `grpc-status-details-bin` trailer (a serialized google.rpc.Status) when there is one."""
    status = status_pb2.Status(code=_code_number(code), message=message or "")
    for key, value in trailing_metadata or ():
        if key == DETAILS_METADATA_KEY and isinstance(value, bytes):
            rich = status_pb2.Status()
            try:
                rich.ParseFromString(value)
            except DecodeError:
                continue
            status.details.extend(rich.details)
            if not status.message:
                status.message = rich.message
    return status


def status_from_grpc_error(error: RpcErrorLike) -> status_pb2.Status:
    """The Status of a failed call from its RpcError (code, details, trailing metadata)."""
    return status_from_parts(error.code(), error.details(), error.trailing_metadata())


def transcode_error_status(error: TranscodeError) -> status_pb2.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming the offending field/parameter."""
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=error.field, description=error.message
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=error.message)
    status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status
