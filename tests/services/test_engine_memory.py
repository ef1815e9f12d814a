"""The in-memory engine with a fake clock: eviction by age and the idempotency window
exactly at their bounds. The contract itself runs on every engine in test_engine_contract.py."""

from __future__ import annotations

import pytest

from services.engine import Cursor, EngineConfig
from services.engine.memory import MemoryEngine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


async def make_engine(**config: float) -> tuple[MemoryEngine, FakeClock]:
    clock = FakeClock()
    engine = MemoryEngine(EngineConfig(**config), clock_ns=clock)  # type: ignore[arg-type]
    await engine.create_room("lobby", display_name="Lobby", description="", labels={}, creator="u")
    return engine, clock


async def post(
    engine: MemoryEngine, text: str, *, request_id: str = "", room: str = "lobby"
) -> int:
    result = await engine.post_message(
        room, text=text, attributes={}, sender="alice", request_id=request_id
    )
    return result.message.offset


@pytest.mark.parametrize("text", ["", "abc", "zz-1", "0123456789abcdef-", "0123456789ABCDEF-1"])
def test_malformed_cursor_names_the_field(text: str) -> None:
    with pytest.raises(Exception, match="cursor") as info:
        Cursor.parse(text)
    assert getattr(info.value, "field", "") == "cursor"


async def test_events_older_than_max_age_are_evicted() -> None:
    engine, clock = await make_engine(history_max_age_s=60)
    epoch = (await engine.get_room("lobby")).epoch
    await post(engine, "old")
    clock.advance(61)
    await post(engine, "new")
    page = await engine.read_history("lobby", start_offset=0, forward=True, limit=10)
    assert [m.text for m in page.messages] == ["new"]
    assert page.first_offset == 2
    sub = await engine.subscribe("lobby", cursor=Cursor(epoch, 0), user="bob")
    assert not sub.recovered


async def test_idempotent_post_returns_the_original_and_stores_nothing() -> None:
    engine, clock = await make_engine(idempotency_window_s=30)
    first = await engine.post_message(
        "lobby", text="hi", attributes={}, sender="a", request_id="r1"
    )
    again = await engine.post_message(
        "lobby", text="hi", attributes={}, sender="a", request_id="r1"
    )
    assert again.duplicate
    assert not first.duplicate
    assert again.message == first.message
    assert (await engine.get_room("lobby")).last_offset == 1
    clock.advance(31)
    later = await engine.post_message(
        "lobby", text="hi", attributes={}, sender="a", request_id="r1"
    )
    assert not later.duplicate
    assert later.message.offset == 2
