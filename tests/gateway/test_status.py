"""google.rpc.Status JSON bodies and the gRPC code → HTTP status table."""

from __future__ import annotations

import grpc
import orjson
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.status import (
    http_status_for,
    status_from_grpc_error,
    status_from_parts,
    status_json,
    status_to_json,
    transcode_error_status,
)
from gateway.transcode import TranscodeError

TABLE = [
    (grpc.StatusCode.OK, 200),
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DATA_LOSS, 500),
]


@pytest.mark.parametrize(("code", "http_status"), TABLE)
def test_every_grpc_code_maps_to_the_standard_http_status(
    code: grpc.StatusCode, http_status: int
) -> None:
    assert http_status_for(code) == http_status
    assert http_status_for(code.value[0]) == http_status


def test_an_unknown_code_number_is_a_500() -> None:
    assert http_status_for(99) == 500


def test_status_json_has_code_message_and_typed_details() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2))
    body = orjson.loads(status_json(grpc.StatusCode.UNAVAILABLE, "try later", [retry]))
    assert body == {
        "code": 14,
        "message": "try later",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
    }


def test_status_json_without_details_still_has_the_key() -> None:
    assert orjson.loads(status_json(5, "no room r1")) == {
        "code": 5,
        "message": "no room r1",
        "details": [],
    }


def test_an_unknown_detail_type_is_kept_as_type_and_base64_value() -> None:
    unknown = any_pb2.Any(type_url="type.example.com/acme.Secret", value=b"\x01\x02")
    body = orjson.loads(status_json(code_pb2.INTERNAL, "boom", [unknown]))
    assert body["details"] == [{"@type": "type.example.com/acme.Secret", "value": "AQI="}]


def _rich_status() -> status_pb2.Status:
    status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="rich message")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="ROOM_CLOSED", domain="switchboard", metadata={"a": "b"})
    )
    return status


def test_details_are_decoded_from_grpc_status_details_bin() -> None:
    trailers = [("other", "x"), ("grpc-status-details-bin", _rich_status().SerializeToString())]
    status = status_from_parts(grpc.StatusCode.FAILED_PRECONDITION, "call message", trailers)
    body = orjson.loads(status_to_json(status))
    assert body == {
        "code": 9,
        "message": "call message",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ROOM_CLOSED",
                "domain": "switchboard",
                "metadata": {"a": "b"},
            }
        ],
    }


def test_malformed_details_trailer_is_dropped() -> None:
    trailers = [("grpc-status-details-bin", b"\xff\xff\xff")]
    status = status_from_parts(grpc.StatusCode.INTERNAL, "boom", trailers)
    assert status == status_pb2.Status(code=code_pb2.INTERNAL, message="boom")


def test_status_from_grpc_error_falls_back_to_the_rich_message() -> None:
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", _rich_status().SerializeToString()))
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION, grpc.aio.Metadata(), trailers, details=None
    )
    status = status_from_grpc_error(error)
    assert (status.code, status.message, len(status.details)) == (9, "rich message", 1)


def test_a_transcode_error_becomes_invalid_argument_with_a_field_violation() -> None:
    error = TranscodeError("invalid value for query parameter 'x'", field="x")
    body = orjson.loads(status_to_json(transcode_error_status(error)))
    assert body == {
        "code": 3,
        "message": "invalid value for query parameter 'x'",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": "x", "description": "invalid value for query parameter 'x'"}
                ],
            }
        ],
    }
