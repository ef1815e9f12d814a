"""Request building for every HttpRule binding shape of testing.v1.EverythingService,
response printing (response_body, HttpBody) and robustness against arbitrary bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from google.api import annotations_pb2, http_pb2, httpbody_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.transcode
from gateway.transcode import (
    JsonOptions,
    QueryOptions,
    TranscodeError,
    build_request,
    derive_update_mask,
    encode_message,
    http_body_response,
)
from tests.gateway.everything import everything_pb2

SERVICE = everything_pb2.DESCRIPTOR.services_by_name["EverythingService"]
EVERYTHING = everything_pb2.Everything.DESCRIPTOR
Bindings = Sequence[tuple[tuple[str, ...], str]]


def method(name: str) -> MethodDescriptor:
    return SERVICE.methods_by_name[name]


def rule(name: str) -> http_pb2.HttpRule:
    return method(name).GetOptions().Extensions[annotations_pb2.http]


def request(
    name: str,
    *,
    path: Bindings = (),
    query: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    content_type: str = "application/json",
    options: JsonOptions | None = None,
    query_options: QueryOptions | None = None,
) -> Any:
    """Build the request of method `name` the way its HttpRule says."""
    http_rule = rule(name)
    return build_request(
        method(name).input_type,
        path_bindings=path,
        query=query,
        body=body,
        body_field=http_rule.body,
        content_type=content_type,
        http_method=http_rule.WhichOneof("pattern").upper(),
        options=options or JsonOptions(),
        query_options=query_options or QueryOptions(),
    )


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


# ---------------------------------------------------------------- body "*"


def test_body_star_is_the_whole_request_and_path_values_win() -> None:
    body = b'{"id": "from-body", "int64Value": "7", "nested": {"name": "n"}}'
    message = request("CreateEverything", body=body)
    assert as_dict(message) == {"id": "from-body", "int64Value": "7", "nested": {"name": "n"}}
    message = request("ResetEverything", path=[(("id",), "from-path")], body=body)
    assert message.id == "from-path"
    assert message.int64_value == 7


def test_body_star_accepts_an_empty_body() -> None:
    assert request("CreateEverything", body=b"") == everything_pb2.Everything()
    assert request("CreateEverything", body=None) == everything_pb2.Everything()


def test_body_star_leaves_nothing_for_the_query() -> None:
    with pytest.raises(TranscodeError, match="already bound by the request body") as raised:
        request("CreateEverything", body=b"{}", query=[("id", "x")])
    assert raised.value.field == "id"


def test_body_star_must_be_an_object() -> None:
    with pytest.raises(TranscodeError, match=r"expected a JSON object.*got an array"):
        request("CreateEverything", body=b"[]")


# ---------------------------------------------------------------- body "<field>"


def test_body_field_scalar_takes_a_json_string() -> None:
    message = request("SetString", path=[(("id",), "e1")], body=b'"hello"')
    assert as_dict(message) == {"id": "e1", "stringValue": "hello"}


def test_body_field_scalar_of_the_wrong_type_names_the_field() -> None:
    with pytest.raises(TranscodeError) as raised:
        request("SetString", path=[(("id",), "e1")], body=b"42")
    assert raised.value.field == "string_value"


def test_body_field_message_takes_the_object_and_query_fills_the_rest() -> None:
    message = request(
        "SetNested",
        path=[(("id",), "e1")],
        body=b'{"name": "n", "kind": "KIND_LEAF"}',
        query=[("int32Value", "3")],
    )
    assert as_dict(message) == {
        "id": "e1",
        "int32Value": 3,
        "nested": {"name": "n", "kind": "KIND_LEAF"},
    }


def test_body_field_repeated_takes_a_json_array() -> None:
    message = request("AppendStrings", path=[(("id",), "e1")], body=b'["a", "b"]')
    assert list(message.repeated_string) == ["a", "b"]
    with pytest.raises(TranscodeError, match="must be in"):
        request("AppendStrings", path=[(("id",), "e1")], body=b'"a"')


def test_the_body_field_is_not_settable_by_query() -> None:
    with pytest.raises(TranscodeError, match="already bound by the request body") as raised:
        request("SetNested", path=[(("id",), "e1")], body=b"{}", query=[("nested.amount", "1")])
    assert raised.value.field == "nested.amount"


# ---------------------------------------------------------------- no body


def test_no_body_binds_path_and_query() -> None:
    message = request(
        "GetEverything",
        path=[(("id",), "e1")],
        query=[("nested.name", "n"), ("labels[a]", "b"), ("repeatedInt64", "5")],
    )
    assert as_dict(message) == {
        "id": "e1",
        "nested": {"name": "n"},
        "labels": {"a": "b"},
        "repeatedInt64": ["5"],
    }


@pytest.mark.parametrize("body", [b"", b"  \n", b"{}", b" {} "])
def test_no_body_tolerates_an_empty_body(body: bytes) -> None:
    assert request("DeleteEverything", path=[(("id",), "e1")], body=body).id == "e1"


def test_no_body_rejects_a_body_with_content() -> None:
    with pytest.raises(TranscodeError, match="takes no request body"):
        request("DeleteEverything", path=[(("id",), "e1")], body=b'{"id": "x"}')


def test_a_path_bound_field_is_not_settable_by_query() -> None:
    with pytest.raises(TranscodeError, match="already bound by the path") as raised:
        request("GetEverything", path=[(("id",), "e1")], query=[("id", "e2")])
    assert raised.value.field == "id"


# ---------------------------------------------------------------- path variables


def test_nested_and_multi_segment_and_enum_path_variables() -> None:
    nested = request("GetByNestedName", path=[(("nested", "name"), "shelves/1/books/2")])
    assert nested.nested.name == "shelves/1/books/2"
    files = request("GetFile", path=[(("path",), "files/a/b.txt")])
    assert files.path == "files/a/b.txt"
    colored = request("GetEverything", path=[(("color",), "COLOR_RED"), (("id",), "e1")])
    assert (colored.color, colored.id) == (everything_pb2.COLOR_RED, "e1")


def test_a_bad_path_value_names_the_variable() -> None:
    with pytest.raises(TranscodeError, match="path variable 'color'") as raised:
        request("GetEverything", path=[(("color",), "PURPLE"), (("id",), "e1")])
    assert raised.value.field == "color"


# ---------------------------------------------------------------- PATCH


def test_patch_derives_the_mask_from_the_body_keys() -> None:
    body = b'{"name": "n", "child": {"amount": 2, "child": {"kind": 1}}, "unknownKey": 1}'
    message = request("UpdateEverything", path=[(("id",), "e1")], body=body)
    assert list(message.update_mask.paths) == ["name", "child.amount", "child.child.kind"]
    assert message.nested.child.child.kind == everything_pb2.Nested.KIND_LEAF


def test_patch_keeps_a_mask_the_client_sent() -> None:
    message = request(
        "UpdateEverything",
        path=[(("id",), "e1")],
        body=b'{"name": "n", "amount": 1}',
        query=[("updateMask", "name")],
    )
    assert list(message.update_mask.paths) == ["name"]


def test_patch_with_an_empty_body_leaves_the_mask_empty() -> None:
    message = request("UpdateEverything", path=[(("id",), "e1")], body=b"")
    assert not message.HasField("update_mask")


def test_mask_derivation_stops_at_maps_well_known_types_repeated_and_empty_objects() -> None:
    body = {
        "labels": {"a": "b"},
        "nested_by_name": {"k": {"name": "x"}},
        "timestamp": "2020-01-01T00:00:00Z",
        "structValue": {"a": {"b": 1}},
        "repeatedNested": [{"name": "x"}],
        "recursive": {},
        "nested": None,
        "choiceNested": {"child": {"name": "x"}},
    }
    assert derive_update_mask(EVERYTHING, body) == [
        "labels",
        "nested_by_name",
        "timestamp",
        "struct_value",
        "repeated_nested",
        "recursive",
        "nested",
        "choice_nested.child.name",
    ]


# ---------------------------------------------------------------- HttpBody


def test_http_body_request_receives_raw_bytes_and_content_type() -> None:
    raw = b"\x89PNG\r\n\x1a\n not json"
    message = request("EchoHttpBody", body=raw, content_type="image/png")
    assert message == httpbody_pb2.HttpBody(content_type="image/png", data=raw)


def test_http_body_field_with_path_variable() -> None:
    message = request(
        "UploadFile", path=[(("name",), "notes.txt")], body=b"line 1\n", content_type="text/plain"
    )
    assert message.name == "notes.txt"
    assert (message.file.content_type, message.file.data) == ("text/plain", b"line 1\n")


def test_http_body_responses_pass_through_raw() -> None:
    upload = everything_pb2.Upload(
        name="n", file=httpbody_pb2.HttpBody(content_type="text/csv", data=b"a,b\n")
    )
    assert http_body_response(upload, response_body=rule("UploadFile").response_body) == (
        b"a,b\n",
        "text/csv",
    )
    whole = httpbody_pb2.HttpBody(data=b"\x00")
    assert http_body_response(whole) == (b"\x00", "application/octet-stream")
    assert http_body_response(everything_pb2.Everything()) is None
    assert http_body_response(upload) is None


# ---------------------------------------------------------------- responses


def test_encode_message_prints_the_whole_response_with_the_options() -> None:
    message = everything_pb2.Everything(id="e1", int64_value=3)
    printed = orjson.loads(encode_message(message, options=JsonOptions(emit_unpopulated=False)))
    assert printed == {"id": "e1", "int64Value": "3"}


def test_response_body_prints_only_that_field() -> None:
    message = everything_pb2.Everything(id="e1", nested=everything_pb2.Nested(name="n"))
    response_body = rule("GetNested").response_body
    options = JsonOptions(emit_unpopulated=False)
    assert orjson.loads(encode_message(message, response_body=response_body, options=options)) == {
        "name": "n"
    }
    unset = everything_pb2.Everything(id="e1")
    assert encode_message(unset, response_body="nested", options=options) == b"{}"
    repeated = everything_pb2.Everything(repeated_int64=[1, 2])
    assert encode_message(repeated, response_body="repeated_int64", options=options) == (
        b'["1","2"]'
    )


# ---------------------------------------------------------------- robustness

_FIELD_NAMES = sorted(
    {f.name for f in EVERYTHING.fields} | {f.json_name for f in EVERYTHING.fields} | {"@type"}
)
_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
_json_documents = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
_BODY_METHODS = ["CreateEverything", "SetString", "SetNested", "AppendStrings", "UpdateEverything"]
_ROBUSTNESS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _outcome(name: str, **kwargs: Any) -> Any:
    """The request built, or the TranscodeError raised (any other exception fails the test)."""
    try:
        return request(name, **kwargs)
    except TranscodeError as error:
        return error


def _only_transcode_errors(name: str, body: bytes) -> None:
    path = [(("id",), "x")] if name != "CreateEverything" else []
    outcome = _outcome(name, body=body, path=path)
    if isinstance(outcome, TranscodeError):
        assert outcome.message
        assert outcome.http_status == 400
    else:
        assert isinstance(outcome, everything_pb2.Everything)


@_ROBUSTNESS
@given(name=st.sampled_from(_BODY_METHODS), document=_json_documents)
def test_arbitrary_json_bodies_raise_only_transcode_errors(name: str, document: Any) -> None:
    try:
        body = orjson.dumps(document)
    except (orjson.JSONEncodeError, TypeError):
        body = repr(document).encode()
    _only_transcode_errors(name, body)


@_ROBUSTNESS
@given(name=st.sampled_from(_BODY_METHODS), body=st.binary(max_size=64))
def test_arbitrary_bytes_bodies_raise_only_transcode_errors(name: str, body: bytes) -> None:
    _only_transcode_errors(name, body)


@_ROBUSTNESS
@given(
    query=st.lists(
        st.tuples(st.sampled_from(_FIELD_NAMES) | st.text(max_size=8), st.text(max_size=8)),
        max_size=5,
    )
)
def test_arbitrary_queries_raise_only_transcode_errors(query: list[tuple[str, str]]) -> None:
    outcome = _outcome("GetEverything", path=[(("id",), "x")], query=query)
    if isinstance(outcome, TranscodeError):
        assert outcome.field in {name for name, _ in query}
        assert repr(outcome.field) in outcome.message
    else:
        assert outcome.id == "x"


def test_the_module_exports_what_the_gateway_contract_names() -> None:
    for name in gateway.transcode.__all__:
        assert hasattr(gateway.transcode, name), name


def test_descriptor_type_is_what_build_request_takes() -> None:
    descriptor: Descriptor = method("GetEverything").input_type
    assert descriptor.full_name == "testing.v1.Everything"
