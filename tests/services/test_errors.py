"""The error mapping table and the request validators, directly."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from services import errors
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


@pytest.mark.parametrize(
    ("error", "code", "detail"),
    [
        (InvalidArgument("bad", field="f"), grpc.StatusCode.INVALID_ARGUMENT, "BadRequest"),
        (NotFound("gone"), grpc.StatusCode.NOT_FOUND, "ResourceInfo"),
        (AlreadyExists("dup"), grpc.StatusCode.ALREADY_EXISTS, "ResourceInfo"),
        (EtagMismatch("etag"), grpc.StatusCode.FAILED_PRECONDITION, "PreconditionFailure"),
        (errors.EpochChanged("ep"), grpc.StatusCode.FAILED_PRECONDITION, "PreconditionFailure"),
        (PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED, "ErrorInfo"),
        (CursorAhead("ahead", field="cursor"), grpc.StatusCode.OUT_OF_RANGE, "BadRequest"),
        (SubscriberOverflow("slow"), grpc.StatusCode.RESOURCE_EXHAUSTED, "ErrorInfo"),
        (EngineClosed("bye"), grpc.StatusCode.UNAVAILABLE, "ErrorInfo"),
        (EngineError("??"), grpc.StatusCode.INTERNAL, "ErrorInfo"),
    ],
)
def test_every_engine_error_has_a_code_and_a_detail(
    error: EngineError, code: grpc.StatusCode, detail: str
) -> None:
    status = errors.status_proto(error, resource="rooms/lobby")
    assert status.code == code.value[0]
    assert status.message == error.message
    (packed,) = status.details
    assert packed.TypeName() == f"google.rpc.{detail}"


def test_resource_info_names_the_resource_type() -> None:
    status = errors.status_proto(NotFound("gone"), resource="rooms/a/messages/b")
    info = error_details_pb2.ResourceInfo()
    status.details[0].Unpack(info)
    assert (info.resource_type, info.resource_name) == (
        "switchboard.v1.Message",
        "rooms/a/messages/b",
    )


def test_room_and_message_names() -> None:
    assert errors.parse_room_name("rooms/lobby-1", "name") == "lobby-1"
    assert errors.parse_message_name("rooms/a/messages/f00d", "name") == ("a", "f00d")
    for bad in ("rooms/", "room/x", "rooms/X", "rooms/a/b", "rooms/a-"):
        with pytest.raises(InvalidArgument, match="'" + bad) as caught:
            errors.parse_room_name(bad, "parent")
        assert caught.value.field == "parent"
    for bad in ("rooms/a", "rooms/a/messages/", "rooms/a/msgs/b", "rooms/a/messages/b/c"):
        with pytest.raises(InvalidArgument) as caught:
            errors.parse_message_name(bad, "message.name")
        assert caught.value.field == "message.name"
    with pytest.raises(InvalidArgument, match="name is required"):
        errors.parse_room_name("", "name")


def test_room_id_limits() -> None:
    assert errors.check_room_id("a") == "a"
    assert errors.check_room_id("a" * 63) == "a" * 63
    for bad in ("a" * 64, "-a", "a-", "A", "a.b", "ä", "a\n"):
        with pytest.raises(InvalidArgument):
            errors.check_room_id(bad)


def test_page_size() -> None:
    assert errors.page_size(0) == 50
    assert errors.page_size(7) == 7
    assert errors.page_size(5000) == 1000
    with pytest.raises(InvalidArgument, match="page_size -1 must not be negative"):
        errors.page_size(-1)


def test_text_attributes_and_labels() -> None:
    assert errors.check_text("ok", "message.text", max_bytes=2) == "ok"
    with pytest.raises(InvalidArgument, match=r"message\.text is 3 bytes"):
        errors.check_text("ok!", "message.text", max_bytes=2)
    with pytest.raises(InvalidArgument, match=r"message\.attributes has 17 entries"):
        errors.check_attributes({str(i): "" for i in range(17)})
    with pytest.raises(InvalidArgument) as caught:
        errors.check_labels({"k": "v" * 64})
    assert caught.value.field == "room.labels['k']"
    with pytest.raises(InvalidArgument):
        errors.check_labels({"": "v"})
    long = "x" * 500
    error = errors.invalid("f", long, "is bad")
    assert len(error.message) < 120  # long values are shortened in messages
