"""The test SSE parser follows the WHATWG interpretation rules, whatever the chunking."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.gateway.sse_client import ServerSentEvent, SseParser


def parse(*chunks: bytes) -> tuple[list[ServerSentEvent], SseParser]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser


def test_line_endings_lf_cr_and_crlf_all_end_lines() -> None:
    events, _ = parse(b"data: a\n\ndata: b\r\rdata: c\r\n\r\n")
    assert [e.data for e in events] == ["a", "b", "c"]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    events, _ = parse(b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"\r")
    assert [e.data for e in events] == ["a", "b"]


def test_multi_line_data_is_joined_with_lf() -> None:
    events, _ = parse(b"data: one\ndata:two\ndata\n\n")
    assert events == [ServerSentEvent(type="message", data="one\ntwo\n", last_event_id="")]


def test_comments_are_recorded_and_dispatch_nothing() -> None:
    events, parser = parse(b": keepalive\n\n:x\n\n")
    assert events == []
    assert parser.comments == ["keepalive", "x"]


def test_only_one_leading_space_is_removed() -> None:
    events, _ = parse(b"event:  spaced\ndata:  two\n\n")
    assert events[0].type == " spaced"
    assert events[0].data == " two"


def test_id_persists_and_id_with_nul_is_ignored() -> None:
    events, parser = parse(b"id: 7\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\n")
    assert [e.last_event_id for e in events] == ["7", "7", "7"]
    assert parser.last_event_id == "7"


def test_id_without_data_still_sets_last_event_id() -> None:
    events, parser = parse(b"id: 9\n\n")
    assert events == []
    assert parser.last_event_id == "9"


def test_retry_takes_only_digits() -> None:
    _, parser = parse(b"retry: 1500\n\nretry: 2x\n\n")
    assert parser.retry_ms == 1500


def test_unterminated_event_is_dropped_and_bom_is_skipped() -> None:
    events, _ = parse(b"\xef\xbb\xbfdata: a\n\ndata: b\n")
    assert [e.data for e in events] == ["a"]


def test_event_type_resets_after_dispatch() -> None:
    events, _ = parse(b"event: error\ndata: {}\n\ndata: x\n\n")
    assert [e.type for e in events] == ["error", "message"]


_STREAM = (
    b"retry: 10\n\n: hb\n\nid: 1\r\nevent: a\r\ndata: x\r\n\r\n"
    b"data: \xc3\xa9t\xc3\xa9\rdata: 2\r\r:c\nid: 2\ndata: y\n\n"
)


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=len(_STREAM)), max_size=8))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(_STREAM)]
    chunks = [_STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    events, parser = parse(*chunks)
    assert events == [
        ServerSentEvent(type="a", data="x", last_event_id="1"),
        ServerSentEvent(type="message", data="été\n2", last_event_id="1"),
        ServerSentEvent(type="message", data="y", last_event_id="2"),
    ]
    assert parser.retry_ms == 10
    assert parser.comments == ["hb", "c"]
