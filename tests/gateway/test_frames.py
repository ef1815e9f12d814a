"""The WebSocket frame protocol: subprotocols, frames, the session machine, close codes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.frames import (
    CLOSE_REASON_MAX_BYTES,
    CloseCause,
    FrameError,
    HalfClose,
    LocalProtocolError,
    MessageFrame,
    Negotiated,
    Session,
    SessionEvent,
    SessionState,
    Subprotocol,
    SubprotocolError,
    close_code,
    close_reason,
    encode_message,
    encode_status,
    negotiate,
    parse_client_frame,
)

JSON, PROTO = Subprotocol.JSON, Subprotocol.PROTO


def test_negotiation_picks_the_first_known_and_defaults_to_json() -> None:
    assert negotiate([]) == Negotiated(JSON, None)
    picked = negotiate(["x", "switchboard.grpc.proto.v1", "switchboard.grpc.json.v1"])
    assert picked == Negotiated(PROTO, "switchboard.grpc.proto.v1")
    with pytest.raises(SubprotocolError, match=r"chat\.v2.*switchboard\.grpc\.json\.v1"):
        negotiate(["chat.v2"])


def test_bearer_token_entries_are_never_echoed_nor_named() -> None:
    assert negotiate(["bearer", "s3cret"]) == Negotiated(JSON, "bearer")
    assert negotiate(["switchboard.grpc.proto.v1", "bearer", "s3cret"]) == Negotiated(
        PROTO, "switchboard.grpc.proto.v1"
    )
    with pytest.raises(SubprotocolError) as refused:
        negotiate(["bearer", "s3cret", "chat.v2"])
    assert "s3cret" not in str(refused.value)


def test_json_client_frames() -> None:
    frame = parse_client_frame(JSON, '{"message": {"room": "rooms/a"}}')
    assert isinstance(frame, MessageFrame)
    assert orjson.loads(frame.payload) == {"room": "rooms/a"}
    assert parse_client_frame(JSON, '{"halfClose": true}') == HalfClose()


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "exactly one key"),
        ('{"message": {}, "halfClose": true}', "exactly one key"),
        ('{"messages": {}}', "'messages'"),
        ('{"message": 3}', "'message'"),
        ('{"halfClose": false}', "'halfClose'"),
        (b"\x01", "text frames"),
    ],
)
def test_bad_json_client_frames_are_named(data: str | bytes, named: str) -> None:
    with pytest.raises(FrameError, match=named):
        parse_client_frame(JSON, data)


def test_binary_client_frames() -> None:
    assert parse_client_frame(PROTO, b"\x01abc") == MessageFrame(payload=b"abc")
    assert parse_client_frame(PROTO, b"\x01") == MessageFrame(payload=b"")
    assert parse_client_frame(PROTO, b"\x02") == HalfClose()
    bad: list[tuple[str | bytes, str]] = [
        (b"", "empty"),
        (b"\x02x", "no payload"),
        (b"\x07", "0x07"),
        ("{}", "binary"),
    ]
    for data, named in bad:
        with pytest.raises(FrameError, match=named):
            parse_client_frame(PROTO, data)


def test_server_frames() -> None:
    assert orjson.loads(encode_message(JSON, b'{"a":1}')) == {"result": {"a": 1}}
    assert orjson.loads(encode_status(JSON, b'{"code":0}')) == {"status": {"code": 0}}
    assert encode_message(PROTO, b"xyz") == b"\x01xyz"
    assert encode_status(PROTO, b"\x08\x05") == b"\x03\x08\x05"


def test_session_walks_the_normal_call() -> None:
    session = Session()
    assert session.receive(MessageFrame(b"{}")) is SessionState.OPEN
    assert session.step(SessionEvent.SEND_MESSAGE) is SessionState.OPEN
    assert session.receive(HalfClose()) is SessionState.HALF_CLOSED
    assert session.step(SessionEvent.SEND_MESSAGE) is SessionState.HALF_CLOSED
    assert session.step(SessionEvent.SEND_STATUS) is SessionState.STATUS_SENT
    assert session.receive(MessageFrame(b"{}")) is SessionState.STATUS_SENT  # a benign race
    assert session.step(SessionEvent.CLOSE) is SessionState.CLOSED


def test_client_breaking_the_session_is_a_frame_error() -> None:
    session = Session()
    session.receive(HalfClose())
    with pytest.raises(FrameError, match=r"receive message.*half-closed"):
        session.receive(MessageFrame(b"{}"))
    with pytest.raises(FrameError, match="half-close"):
        session.receive(HalfClose())


def test_server_breaking_the_session_is_loud() -> None:
    session = Session()
    session.step(SessionEvent.SEND_STATUS)
    with pytest.raises(LocalProtocolError, match="send status in state status-sent"):
        session.step(SessionEvent.SEND_STATUS)
    with pytest.raises(LocalProtocolError, match="send message"):
        session.step(SessionEvent.SEND_MESSAGE)
    session.step(SessionEvent.CLOSE)
    with pytest.raises(LocalProtocolError, match="closed"):
        session.step(SessionEvent.CLOSE)


@settings(max_examples=200)
@given(st.lists(st.sampled_from(list(SessionEvent)), max_size=12))
def test_status_is_sent_at_most_once_and_closed_is_final(events: list[SessionEvent]) -> None:
    session = Session()
    statuses = 0
    for event in events:
        before = session.state
        try:
            session.step(event)
        except (FrameError, LocalProtocolError):
            assert session.state is before
            continue
        statuses += event is SessionEvent.SEND_STATUS
        assert before is not SessionState.CLOSED
    assert statuses <= 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, 1000),
        (16, 1008),
        (7, 1008),
        (2, 1011),
        (13, 1011),
        (15, 1011),
        (3, 4003),
        (5, 4005),
        (8, 4008),
        (14, 4014),
        (4, 4004),
        (1, 4001),
    ],
)
def test_status_close_codes(code: int, expected: int) -> None:
    assert close_code(code) == expected


def test_size_and_shutdown_close_codes() -> None:
    assert close_code(8, CloseCause.MESSAGE_TOO_BIG) == 1009
    assert close_code(14, CloseCause.SHUTDOWN) == 1012


@settings(max_examples=200)
@given(st.text())
def test_close_reason_fits_a_close_frame(message: str) -> None:
    reason = close_reason(message)
    assert len(reason.encode()) <= CLOSE_REASON_MAX_BYTES
    assert message.startswith(reason)


@settings(max_examples=200)
@given(
    message=st.dictionaries(
        st.text(), st.text() | st.integers(-(2**63), 2**63 - 1) | st.booleans()
    ),
    payload=st.binary(),
)
def test_any_request_message_survives_its_frame(message: dict[str, object], payload: bytes) -> None:
    text_frame = parse_client_frame(JSON, orjson.dumps({"message": message}).decode())
    assert isinstance(text_frame, MessageFrame)
    assert orjson.loads(text_frame.payload) == message
    assert parse_client_frame(PROTO, b"\x01" + payload) == MessageFrame(payload=payload)
