"""The fast JSON parsing path: what it takes on itself and what it leaves to json_format.

(Agreement with json_format on arbitrary documents is a property test in test_jsonmap.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.jsonparse import Unsupported, fast_parse
from tests.gateway.everything import everything_pb2


def test_plain_documents_are_parsed_directly() -> None:
    message = everything_pb2.Everything()
    fast_parse(
        {
            "id": "x",
            "int64Value": "-5",
            "uint32_value": 7,
            "floatValue": 1,
            "color": "COLOR_RED",
            "nested": {"child": {"kind": 2}},
            "repeatedNested": [{"name": "a"}],
            "labels": {"k": "v"},
            "namesByNumber": {"-3": "minus"},
            "timestamp": "1970-01-01T00:00:01Z",
            "int32Wrapper": 4,
            "choiceText": None,
            "mystery": 1,
        },
        message,
        ignore_unknown=True,
    )
    assert message == everything_pb2.Everything(
        id="x",
        int64_value=-5,
        uint32_value=7,
        float_value=1.0,
        color=everything_pb2.COLOR_RED,
        nested=everything_pb2.Nested(child=everything_pb2.Nested(kind=2)),
        repeated_nested=[everything_pb2.Nested(name="a")],
        labels={"k": "v"},
        names_by_number={-3: "minus"},
        timestamp={"seconds": 1},
        int32_wrapper={"value": 4},
    )


@pytest.mark.parametrize(
    "document",
    [
        {"int32Value": "1e3"},
        {"int32Value": 1.0},
        {"doubleValue": "NaN"},
        {"boolValue": "true"},
        {"color": "PURPLE"},
        {"color": 99},
        {"choiceText": "a", "choiceNumber": "1"},
        {"mystery": 1},
        {"[ext.field]": 1},
        {"value": None},
        {"repeatedString": [None]},
        {"namesByNumber": {"one": "x"}},
        {"floatValue": 3.5e38},
        {"timestamp": "noon"},
    ],
)
def test_unusual_documents_are_left_to_json_format(document: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        fast_parse(document, everything_pb2.Everything(), ignore_unknown=False)
