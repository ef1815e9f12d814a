"""Query parameters and path values bound to fields of testing.v1.Everything."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format

from gateway.query import QueryOptions, bind_query
from gateway.transcode import TranscodeError
from tests.gateway.everything import everything_pb2

Query = list[tuple[str, str]]


def bind(query: Query, *, reject_unknown: bool = True, **bound: Any) -> Any:
    message = everything_pb2.Everything()
    bind_query(
        message,
        query,
        path_bound=bound.get("path_bound", []),
        body_bound=bound.get("body_bound"),
        options=QueryOptions(reject_unknown=reject_unknown),
    )
    return message


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


@pytest.mark.parametrize(
    ("parameter", "text", "expected"),
    [
        ("doubleValue", "1.5", {"doubleValue": 1.5}),
        ("double_value", "-2e3", {"doubleValue": -2000.0}),
        ("doubleValue", "NaN", {"doubleValue": "NaN"}),
        ("doubleValue", "-Infinity", {"doubleValue": "-Infinity"}),
        ("floatValue", "0.25", {"floatValue": 0.25}),
        ("int32Value", "-2147483648", {"int32Value": -2147483648}),
        ("int64Value", "9223372036854775807", {"int64Value": "9223372036854775807"}),
        ("uint32Value", "4294967295", {"uint32Value": 4294967295}),
        ("uint64Value", "18446744073709551615", {"uint64Value": "18446744073709551615"}),
        ("sint32Value", "+7", {"sint32Value": 7}),
        ("sint64Value", "-7", {"sint64Value": "-7"}),
        ("fixed32Value", "7", {"fixed32Value": 7}),
        ("fixed64Value", "7", {"fixed64Value": "7"}),
        ("sfixed32Value", "-7", {"sfixed32Value": -7}),
        ("sfixed64Value", "-7", {"sfixed64Value": "-7"}),
        ("boolValue", "true", {"boolValue": True}),
        ("bool_value", "1", {"boolValue": True}),
        ("stringValue", "héllo wörld", {"stringValue": "héllo wörld"}),
        ("bytesValue", "aGk=", {"bytesValue": "aGk="}),
        ("bytesValue", "aGk", {"bytesValue": "aGk="}),
        ("bytesValue", "-_8", {"bytesValue": "+/8="}),
        ("bytesValue", "+/8=", {"bytesValue": "+/8="}),
        ("optionalString", "", {"optionalString": ""}),
        ("color", "COLOR_GREEN", {"color": "COLOR_GREEN"}),
        ("color", "3", {"color": "COLOR_BLUE"}),
        ("kind", "KIND_LEAF", {"kind": "KIND_LEAF"}),
        ("nested.name", "n", {"nested": {"name": "n"}}),
        ("nested.child.kind", "2", {"nested": {"child": {"kind": "KIND_BRANCH"}}}),
        ("recursive.next.next.label", "deep", {"recursive": {"next": {"next": {"label": "deep"}}}}),
        ("choiceNested.amount", "3", {"choiceNested": {"amount": 3}}),
        ("timestamp", "2024-02-29T12:30:00.5+01:00", {"timestamp": "2024-02-29T11:30:00.500Z"}),
        ("duration", "1.5s", {"duration": "1.500s"}),
        ("duration", "-3s", {"duration": "-3s"}),
        ("updateMask", "name,nested.childKind", {"updateMask": "name,nested.childKind"}),
        (
            "update_mask",
            "int32_value, nested.child_kind",
            {"updateMask": "int32Value,nested.childKind"},
        ),
        ("doubleWrapper", "2.5", {"doubleWrapper": 2.5}),
        ("floatWrapper", "2.5", {"floatWrapper": 2.5}),
        ("int64Wrapper", "-5", {"int64Wrapper": "-5"}),
        ("uint64Wrapper", "5", {"uint64Wrapper": "5"}),
        ("int32Wrapper", "5", {"int32Wrapper": 5}),
        ("uint32Wrapper", "5", {"uint32Wrapper": 5}),
        ("boolWrapper", "false", {"boolWrapper": False}),
        ("stringWrapper", "", {"stringWrapper": ""}),
        ("bytesWrapper", "aGk", {"bytesWrapper": "aGk="}),
        ("labels[env]", "prod", {"labels": {"env": "prod"}}),
        ("labels[]", "empty key", {"labels": {"": "empty key"}}),
        ("namesByNumber[-4]", "minus four", {"namesByNumber": {"-4": "minus four"}}),
        ("customJSONName", "j", {"customJSONName": "j"}),
        ("custom_json", "p", {"customJSONName": "p"}),
    ],
)
def test_each_query_type_binds_its_field(parameter: str, text: str, expected: object) -> None:
    assert as_dict(bind([(parameter, text)])) == expected


def test_repeated_fields_take_repeated_keys_in_order() -> None:
    message = bind(
        [
            ("repeatedString", "b"),
            ("repeated_string", "a"),
            ("repeatedInt64", "-1"),
            ("repeatedColor", "COLOR_RED"),
            ("repeatedColor", "2"),
            ("repeatedBytes", "AA"),
            ("repeatedTimestamp", "1970-01-01T00:00:01Z"),
        ]
    )
    assert list(message.repeated_string) == ["b", "a"]
    assert list(message.repeated_int64) == [-1]
    assert list(message.repeated_color) == [1, 2]
    assert list(message.repeated_bytes) == [b"\x00"]
    assert [t.seconds for t in message.repeated_timestamp] == [1]


def test_float_query_values_keep_their_value() -> None:
    message = bind([("doubleValue", "Infinity"), ("floatValue", "NaN")])
    assert message.double_value == math.inf
    assert math.isnan(message.float_value)


@pytest.mark.parametrize(
    ("parameter", "text", "complaint"),
    [
        ("int32Value", "2147483648", "out of range"),
        ("int32Value", "1.0", "not an integer"),
        ("int32Value", "", "not an integer"),
        ("uint32Value", "-1", "out of range"),
        ("uint64Value", "18446744073709551616", "out of range"),
        ("int64Value", "1_000", "not an integer"),
        ("int64Value", "٣", "not an integer"),
        ("doubleValue", "one", "not a number"),
        ("doubleValue", "1e400", "out of range"),
        ("floatValue", "1e39", "out of range"),
        ("doubleValue", "inf", "not a number"),
        ("boolValue", "yes", "not a boolean"),
        ("bytesValue", "a", "base64"),
        ("bytesValue", "a*b=", "base64"),
        ("color", "PURPLE", "not a value of testing.v1.Color"),
        ("color", "42", "not a value of testing.v1.Color"),
        ("kind", "COLOR_RED", "not a value of testing.v1.Nested.Kind"),
        ("timestamp", "yesterday", "timestamp"),
        ("duration", "5 minutes", "duration"),
        ("int32Wrapper", "x", "not an integer"),
        ("namesByNumber[x]", "v", "not an integer"),
        ("nested.amount", "-3", "out of range"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_400_naming_the_parameter(
    parameter: str, text: str, complaint: str
) -> None:
    with pytest.raises(TranscodeError) as raised:
        bind([(parameter, text)])
    assert raised.value.field == parameter
    assert raised.value.http_status == 400
    assert parameter in raised.value.message
    assert complaint.lower() in raised.value.message.lower()


@pytest.mark.parametrize(
    "query",
    [
        [("int32Value", "1"), ("int32Value", "2")],
        [("int32Value", "1"), ("int32_value", "1")],
        [("nested.name", "a"), ("nested.name", "b")],
        [("labels[k]", "a"), ("labels[k]", "b")],
        [("timestamp", "2020-01-01T00:00:00Z"), ("timestamp", "2020-01-01T00:00:00Z")],
    ],
)
def test_a_singular_field_given_twice_is_a_400(query: Query) -> None:
    with pytest.raises(TranscodeError, match="more than once") as raised:
        bind(query)
    assert raised.value.field == query[1][0]


@pytest.mark.parametrize(
    "query",
    [
        [("choiceText", "a"), ("choiceNumber", "1")],
        [("choiceNumber", "1"), ("choiceNested.name", "x")],
    ],
)
def test_two_members_of_one_oneof_is_a_400_naming_both(query: Query) -> None:
    with pytest.raises(TranscodeError, match="oneof choice") as raised:
        bind(query)
    assert raised.value.field == query[1][0]


@pytest.mark.parametrize(
    "parameter",
    ["nope", "nested.nope", "int32Value.x", "repeatedNested.name", "labels.x", "a[b]c", "[x]"],
)
def test_unknown_parameters_are_rejected_by_default_and_ignored_on_request(
    parameter: str,
) -> None:
    with pytest.raises(TranscodeError, match="unknown query parameter") as raised:
        bind([(parameter, "1")])
    assert raised.value.field == parameter
    assert bind([(parameter, "1"), ("id", "x")], reject_unknown=False).id == "x"


@pytest.mark.parametrize(
    ("parameter", "text"),
    [
        ("nested", "x"),
        ("repeatedNested", "x"),
        ("labels", "x"),
        ("nestedByName[k]", "x"),
        ("int32Value[k]", "x"),
        ("structValue", "{}"),
        ("any", "x"),
        ("empty", "x"),
    ],
)
def test_fields_that_have_no_text_form_are_a_400(parameter: str, text: str) -> None:
    with pytest.raises(TranscodeError, match="cannot be set from a query string") as raised:
        bind([(parameter, text)])
    assert raised.value.field == parameter


@pytest.mark.parametrize(
    ("parameter", "path_bound", "body_bound", "where"),
    [
        ("id", [("id",)], None, "path"),
        ("nested.name", [("nested", "name")], None, "path"),
        ("nested.name", [], ("nested",), "request body"),
        ("int32Value", [], (), "request body"),
        ("repeated_string", [], ("repeated_string",), "request body"),
    ],
)
def test_fields_bound_by_path_or_body_cannot_be_set_by_query(
    parameter: str, path_bound: list[tuple[str, ...]], body_bound: Any, where: str
) -> None:
    with pytest.raises(TranscodeError, match=f"already bound by the {where}") as raised:
        bind([(parameter, "1")], path_bound=path_bound, body_bound=body_bound)
    assert raised.value.field == parameter


def test_a_sibling_of_a_bound_field_is_settable() -> None:
    message = bind([("nested.amount", "4")], path_bound=[("nested", "name")])
    assert message.nested.amount == 4
