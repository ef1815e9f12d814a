"""The SSE encoder and the SseOptions mapping: what an EventSource would see."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import (
    ResumeCursorError,
    SseEvent,
    SseFieldError,
    SseMapping,
    SseOptionsError,
    encode_comment,
    encode_error,
    encode_event,
    encode_retry,
)
from switchboard.gateway.v1 import options_pb2
from switchboard.v1 import chat_pb2
from tests.gateway.sse_client import ServerSentEvent, SseParser

SUBSCRIBE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].methods_by_name["Subscribe"]


def parse(wire: bytes) -> tuple[list[ServerSentEvent], SseParser]:
    parser = SseParser()
    return parser.feed(wire), parser


def mapping(**options: str) -> SseMapping:
    return SseMapping.compile(
        options_pb2.SseOptions(**options),
        request=chat_pb2.SubscribeRequest.DESCRIPTOR,
        response=chat_pb2.RoomEvent.DESCRIPTOR,
    )


def json_of(message: chat_pb2.RoomEvent) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode()


def test_event_with_id_and_name_reaches_the_parser_intact() -> None:
    wire = encode_event(SseEvent(data=b'{"a":1}', event="message_posted", id="e1:5"))
    assert wire == b'id: e1:5\nevent: message_posted\ndata: {"a":1}\n\n'
    events, _ = parse(wire)
    assert events == [ServerSentEvent("message_posted", '{"a":1}', "e1:5")]


def test_default_event_name_is_not_written() -> None:
    assert encode_event(SseEvent(data=b"{}")) == b"data: {}\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_encoder_refuses_line_breaks_and_nul_in_id_and_event(bad: str) -> None:
    with pytest.raises(SseFieldError, match="id"):
        encode_event(SseEvent(data=b"{}", id=bad))
    with pytest.raises(SseFieldError, match="event"):
        encode_event(SseEvent(data=b"{}", event=bad))


def test_data_with_line_breaks_becomes_several_data_lines() -> None:
    events, _ = parse(encode_event(SseEvent(data=b"one\r\ntwo\rthree\nfour")))
    assert events[0].data == "one\ntwo\nthree\nfour"


def test_retry_comment_and_error_frames() -> None:
    status = b'{"code":14,"message":"backend gone","details":[]}'
    events, parser = parse(encode_retry(2500) + encode_comment("hb\nid: x") + encode_error(status))
    assert parser.retry_ms == 2500
    assert parser.comments == ["hb id: x"]
    assert events == [ServerSentEvent("error", status.decode(), "")]
    with pytest.raises(ValueError, match="-1"):
        encode_retry(-1)


def test_subscribe_options_give_oneof_member_name_and_cursor_id() -> None:
    options = SUBSCRIBE.GetOptions().Extensions[options_pb2.sse]
    compiled = SseMapping.compile(
        options, request=SUBSCRIBE.input_type, response=SUBSCRIBE.output_type
    )
    event = chat_pb2.RoomEvent(id="ep:3", offset=3, message_posted=chat_pb2.Message(text="hi"))
    sse = compiled.event(event, json_of(event))
    assert (sse.event, sse.id) == ("message_posted", "ep:3")
    ephemeral = chat_pb2.RoomEvent(typing=chat_pb2.Typing(user="u", active=True))
    assert compiled.event(ephemeral, b"{}").id is None


def test_no_oneof_member_set_falls_back_to_default_event() -> None:
    assert mapping(event_field="kind").event_type(chat_pb2.RoomEvent()) == "message"
    assert mapping(event_field="kind", default_event="tick").event_type(chat_pb2.RoomEvent()) == (
        "tick"
    )


def test_scalar_and_nested_paths() -> None:
    compiled = mapping(event_field="room", id_field="subscribed.offset")
    event = chat_pb2.RoomEvent(room="rooms/r1", subscribed=chat_pb2.Subscribed(offset=12))
    assert (compiled.event_type(event), compiled.event_id(event)) == ("rooms/r1", "12")
    assert compiled.event_id(chat_pb2.RoomEvent()) is None  # parent message unset
    nested = mapping(event_field="message_posted.sender")
    posted = chat_pb2.RoomEvent(message_posted=chat_pb2.Message(sender="ann"))
    assert nested.event_type(posted) == "ann"
    assert nested.event_type(chat_pb2.RoomEvent()) == "message"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"id_field": "nope"}, "nope"),
        ({"id_field": "subscribed"}, "singular scalar"),
        ({"event_field": "subscribed.nope"}, "nope"),
        ({"event_field": "room.kind"}, "room"),
        ({"resume_field": "cursr"}, "cursr"),
    ],
)
def test_bad_option_paths_are_named(options: dict[str, str], named: str) -> None:
    with pytest.raises(SseOptionsError, match=named):
        mapping(**options)


def test_resume_cursor_is_written_into_the_request_field() -> None:
    request = chat_pb2.SubscribeRequest(room="rooms/a")
    mapping(resume_field="cursor").apply_resume(request, "ep:9")
    assert request.cursor == "ep:9"
    unchanged = chat_pb2.SubscribeRequest()
    mapping().apply_resume(unchanged, "ep:9")
    assert unchanged.cursor == ""


def test_resume_cursor_into_an_integer_field_must_be_a_number() -> None:
    compiled = SseMapping.compile(
        options_pb2.SseOptions(resume_field="start_offset"),
        request=chat_pb2.ListMessagesRequest.DESCRIPTOR,
        response=chat_pb2.RoomEvent.DESCRIPTOR,
    )
    request = chat_pb2.ListMessagesRequest()
    compiled.apply_resume(request, "42")
    assert request.start_offset == 42
    with pytest.raises(ResumeCursorError, match="'x1'"):
        compiled.apply_resume(request, "x1")


@settings(max_examples=200)
@given(event_id=st.text(), name=st.text(), text=st.text())
def test_no_field_value_can_inject_sse_fields(event_id: str, name: str, text: str) -> None:
    compiled = mapping(id_field="id", event_field="room")
    message = chat_pb2.RoomEvent(id=event_id, room=name, message_posted=chat_pb2.Message(text=text))
    events, parser = parse(
        b"id: before\ndata: {}\n\n" + encode_event(compiled.event(message, json_of(message)))
    )
    assert len(events) == 2
    (_, event) = events
    assert orjson.loads(event.data) == orjson.loads(json_of(message))
    clean_name = "".join(c for c in name if c not in "\r\n\x00")
    assert event.type == (clean_name or "message")
    safe_id = event_id and not any(c in event_id for c in "\r\n\x00")
    assert event.last_event_id == (event_id if safe_id else "before")
    assert parser.retry_ms is None
    assert parser.comments == []
