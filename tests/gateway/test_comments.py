"""Comments from SourceCodeInfo, keyed by the full names of the elements they document."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

from gateway.comments import Comments
from gateway.openapi_cli import compile_descriptor_set

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def switchboard_comments() -> Comments:
    with tempfile.TemporaryDirectory() as scratch:
        files = compile_descriptor_set(ROOT / "proto", Path(scratch) / "api.binpb").file
    return Comments.from_files(files)


def test_every_kind_of_element_has_its_comment() -> None:
    comments = switchboard_comments()
    assert comments.get("switchboard.v1.RoomService") == "Manages rooms."
    assert comments.get("switchboard.v1.ChatService.Converse").startswith("A conversation:")
    assert comments.get("switchboard.v1.Room") == "A chat room."
    assert comments.get("switchboard.v1.Room.display_name").startswith("Human-readable title")
    assert comments.get("switchboard.v1.RoomEvent.kind") == "What happened."
    assert comments.get("switchboard.v1.Direction.DIRECTION_FORWARD") == (
        "Oldest first, towards higher offsets."
    )
    assert comments.get("switchboard.gateway.v1.SseOptions.id_field").startswith("Dotted path")


def test_multi_line_comments_keep_their_lines_without_the_leading_space() -> None:
    text = switchboard_comments().get("switchboard.v1.Subscribed.recovered")
    assert text.splitlines()[0] == (
        "True when a cursor was given and every event after it was replayed."
    )
    assert all(not line.startswith(" ") for line in text.splitlines())


def test_imported_files_and_nested_types_are_covered() -> None:
    comments = switchboard_comments()
    assert comments.get("google.rpc.Status.code").startswith("The status code")


def test_trailing_comments_are_used_when_there_is_no_leading_one() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t")
    outer = file.message_type.add(name="Outer")
    outer.nested_type.add(name="Inner").field.add(name="x", number=1)
    file.enum_type.add(name="E").value.add(name="E_ZERO", number=0)
    info = file.source_code_info
    info.location.add(path=[4, 0], leading_comments=" The outer.\n")
    info.location.add(path=[4, 0, 3, 0, 2, 0], trailing_comments=" x, trailing.\n")
    info.location.add(path=[5, 0, 2, 0], leading_comments=" Zero.\n")
    comments = Comments.from_files([file])
    assert comments.by_name == {
        "t.Outer": "The outer.",
        "t.Outer.Inner.x": "x, trailing.",
        "t.E.E_ZERO": "Zero.",
    }


def test_files_without_source_info_give_no_comments() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t")
    file.message_type.add(name="Outer")
    assert Comments.from_files([file]).get("t.Outer") == ""
