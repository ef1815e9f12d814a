"""The shared frame cache: identical message bytes give identical frames; its bounds hold."""

from __future__ import annotations

import pytest

from gateway.bridges.framecache import FrameCache
from gateway.bridges.sse import SseFormat
from gateway.sse import SseMapping
from gateway.transcode import JsonOptions
from switchboard.gateway.v1 import options_pb2
from switchboard.v1 import chat_pb2


def sse_render() -> SseFormat:
    """The SSE format of ChatService.Subscribe, as the gateway builds it."""
    mapping = SseMapping.compile(
        options_pb2.SseOptions(id_field="id", event_field="kind", resume_field="cursor"),
        request=chat_pb2.SubscribeRequest.DESCRIPTOR,
        response=chat_pb2.RoomEvent.DESCRIPTOR,
    )
    return SseFormat(mapping, options=JsonOptions(), response_body="", retry_ms=1000)


def event_bytes(offset: int, text: str = "hi") -> bytes:
    return chat_pb2.RoomEvent(
        id=f"e1:{offset}",
        offset=offset,
        room="rooms/lobby",
        message_posted=chat_pb2.Message(text=text),
    ).SerializeToString()


def test_identical_bytes_give_the_identical_frame_rendered_once() -> None:
    fmt, cache, renders = sse_render(), FrameCache(), []

    def render(raw: bytes) -> bytes:
        renders.append(raw)
        return fmt.message(chat_pb2.RoomEvent.FromString(raw))

    first = cache.frame(event_bytes(7), render)
    again = cache.frame(bytes(bytearray(event_bytes(7))), render)  # equal bytes, new object
    assert again == first
    assert first.startswith(b"id: e1:7\nevent: message_posted\ndata: {")
    assert len(renders) == 1
    other = cache.frame(event_bytes(8), render)
    assert other != first
    assert b"id: e1:8\n" in other
    assert len(renders) == 2


def test_the_frame_is_what_the_format_writes_without_a_cache() -> None:
    fmt = sse_render()
    raw = event_bytes(3, "héllo\nworld")
    expected = fmt.message(chat_pb2.RoomEvent.FromString(raw))
    cache = FrameCache()
    assert cache.frame(raw, lambda r: fmt.message(chat_pb2.RoomEvent.FromString(r))) == expected
    assert cache.frame(raw, lambda r: b"never rendered") == expected


def test_entry_bound_drops_the_least_recently_used() -> None:
    cache = FrameCache(max_entries=3)
    for n in range(3):
        cache.frame(b"m%d" % n, lambda raw: raw + b"!")
    cache.frame(b"m0", lambda raw: b"stale")  # m0 is now the most recently used
    cache.frame(b"m3", lambda raw: raw + b"!")
    assert len(cache) == 3
    assert cache.frame(b"m0", lambda raw: b"re-rendered") == b"m0!"
    assert cache.frame(b"m1", lambda raw: b"re-rendered") == b"re-rendered"  # evicted


@pytest.mark.parametrize("count", [1, 50, 500])
def test_byte_bound_is_never_exceeded(count: int) -> None:
    cache = FrameCache(max_entries=10_000, max_bytes=4096)
    for n in range(count):
        cache.frame(b"%06d" % n * 10, lambda raw: raw * 2)
        assert cache.size <= 4096
    assert cache.size == len(cache) * 3 * 60  # each entry: 60 message bytes + a 120-byte frame


def test_a_message_too_large_for_the_cache_is_rendered_but_not_kept() -> None:
    cache = FrameCache(max_bytes=1000)
    big = b"x" * 400
    assert cache.frame(big, lambda raw: raw) == big
    assert len(cache) == 0
    assert cache.size == 0


@pytest.mark.parametrize("bounds", [{"max_entries": 0}, {"max_bytes": 0}])
def test_bounds_must_be_positive(bounds: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bounds))):
        FrameCache(**bounds)
