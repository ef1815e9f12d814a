"""Field lookup by proto or JSON name and dotted field paths."""

from __future__ import annotations

from gateway.fieldpath import fields_by_name, mutable_parent, resolve
from tests.gateway.everything import everything_pb2

EVERYTHING = everything_pb2.Everything.DESCRIPTOR


def test_fields_are_found_by_proto_and_json_name() -> None:
    table = fields_by_name(EVERYTHING)
    assert table["update_mask"] is table["updateMask"]
    assert table["customJSONName"].name == "custom_json"
    assert "customJson" not in table


def test_resolve_walks_singular_message_fields_only() -> None:
    fields = resolve(EVERYTHING, ["nested", "child", "kind"])
    assert fields is not None
    assert [f.name for f in fields] == ["nested", "child", "kind"]
    assert resolve(EVERYTHING, ["repeatedNested", "name"]) is None
    assert resolve(EVERYTHING, ["int32Value", "x"]) is None
    assert resolve(EVERYTHING, ["nope"]) is None


def test_mutable_parent_populates_the_intermediate_messages() -> None:
    message = everything_pb2.Everything()
    fields = resolve(EVERYTHING, ["nested", "child", "name"])
    assert fields is not None
    mutable_parent(message, fields).name = "leaf"  # type: ignore[attr-defined]  # a Nested
    assert message.nested.child.name == "leaf"
