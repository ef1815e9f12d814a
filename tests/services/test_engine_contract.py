"""The engine contract (ARCHITECTURE.md, "Realtime semantics"), run against every engine.

``make_engine`` is parametrized over the in-memory engine and the Redis engine (a
private redis-server, a fresh key prefix per engine); each test gets engines with a
room ``lobby``. Where the memory engine's tests fake the clock
(tests/services/test_engine_memory.py), the Redis variants here use real time with
sub-second windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.engine import (
    AlreadyExists,
    Cursor,
    CursorAhead,
    Engine,
    EngineClosed,
    EngineConfig,
    EtagMismatch,
    Event,
    EventKind,
    NotFound,
    PermissionDenied,
    RoomChanges,
    SubscriberOverflow,
    Subscription,
)
from services.engine.memory import MemoryEngine
from services.engine.redis import RedisEngine
from tests.services.redis_server import fresh_prefix

MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture(params=["memory", "redis"])
async def make_engine(request: pytest.FixtureRequest) -> AsyncIterator[MakeEngine]:
    """A factory of engines (each with a room ``lobby``), all closed after the test."""
    engines: list[Engine] = []

    async def make(**config: float) -> Engine:
        settings = EngineConfig(**config)  # type: ignore[arg-type]  # test-sized limits
        engine: Engine
        if request.param == "memory":
            engine = MemoryEngine(settings)
        else:
            url = request.getfixturevalue("redis_url")
            engine = RedisEngine(url, settings, prefix=fresh_prefix())
        engines.append(engine)
        await engine.create_room(
            "lobby", display_name="Lobby", description="", labels={}, creator="u"
        )
        return engine

    yield make
    for engine in engines:
        await engine.close()


async def post(engine: Engine, text: str, *, request_id: str = "", room: str = "lobby") -> int:
    result = await engine.post_message(
        room, text=text, attributes={}, sender="alice", request_id=request_id
    )
    return result.message.offset


async def take(subscription: Subscription, n: int, *, durable_only: bool = True) -> list[Event]:
    out: list[Event] = []
    iterator = aiter(subscription)
    while len(out) < n:
        event = await asyncio.wait_for(anext(iterator), 2)
        if event.durable or not durable_only:
            out.append(event)
    return out


def texts(events: list[Event]) -> list[str]:
    return [e.message.text for e in events if e.message is not None]


async def test_offsets_are_gapless_and_cursor_round_trips(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    offsets = [await post(engine, f"m{i}") for i in range(5)]
    assert offsets == [1, 2, 3, 4, 5]
    room = await engine.get_room("lobby")
    assert room.last_offset == 5
    cursor = Cursor(room.epoch, 3)
    assert Cursor.parse(cursor.encode()) == cursor


async def test_resume_replays_exactly_the_missed_events_then_live(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    for i in range(3):
        await post(engine, f"seen{i}")
    epoch = (await engine.get_room("lobby")).epoch
    for i in range(4):
        await post(engine, f"missed{i}")
    sub = await engine.subscribe("lobby", cursor=Cursor(epoch, 3), user="bob")
    assert sub.recovered
    await post(engine, "live")
    events = await take(sub, 5)
    assert texts(events) == ["missed0", "missed1", "missed2", "missed3", "live"]
    assert [e.offset for e in events] == [4, 5, 6, 7, 8]
    await sub.close()


async def test_resume_at_head_recovers_with_nothing_to_replay(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    await post(engine, "a")
    epoch = (await engine.get_room("lobby")).epoch
    sub = await engine.subscribe("lobby", cursor=Cursor(epoch, 1), user="bob")
    assert sub.recovered
    assert sub.position == Cursor(epoch, 1)
    await post(engine, "b")
    assert texts(await take(sub, 1)) == ["b"]


async def test_gap_beyond_history_is_not_recovered_and_replays_nothing(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(history_max_events=3)
    epoch = (await engine.get_room("lobby")).epoch
    for i in range(6):
        await post(engine, f"m{i}")
    sub = await engine.subscribe("lobby", cursor=Cursor(epoch, 1), user="bob")
    assert not sub.recovered
    await post(engine, "live")
    assert texts(await take(sub, 1)) == ["live"]


async def test_evicted_messages_can_no_longer_be_changed(make_engine: MakeEngine) -> None:
    engine = await make_engine(history_max_events=2)
    first = await engine.post_message("lobby", text="a", attributes={}, sender="alice")
    for text in ("b", "c"):
        await post(engine, text)
    with pytest.raises(NotFound, match=first.message.message_id):
        await engine.edit_message(
            "lobby", first.message.message_id, text="x", attributes=None, actor=None
        )
    page = await engine.read_history("lobby", start_offset=0, forward=True, limit=10)
    assert ([m.text for m in page.messages], page.first_offset, page.last_offset) == (
        ["b", "c"],
        2,
        3,
    )


async def test_events_older_than_max_age_are_evicted(make_engine: MakeEngine) -> None:
    engine = await make_engine(history_max_age_s=0.5)  # real time: Redis has no fake clock
    epoch = (await engine.get_room("lobby")).epoch
    await post(engine, "old")
    await asyncio.sleep(0.6)  # the event ages past the bound
    await post(engine, "new")
    page = await engine.read_history("lobby", start_offset=0, forward=True, limit=10)
    assert [m.text for m in page.messages] == ["new"]
    assert page.first_offset == 2
    sub = await engine.subscribe("lobby", cursor=Cursor(epoch, 0), user="bob")
    assert not sub.recovered


async def test_cursor_from_another_epoch_is_not_recovered(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    await post(engine, "a")
    restarted = await make_engine()
    await post(restarted, "b")
    old_epoch = (await engine.get_room("lobby")).epoch
    assert old_epoch != (await restarted.get_room("lobby")).epoch
    sub = await restarted.subscribe("lobby", cursor=Cursor(old_epoch, 1), user="bob")
    assert not sub.recovered


async def test_cursor_ahead_of_the_stream_is_refused(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    await post(engine, "a")
    epoch = (await engine.get_room("lobby")).epoch
    with pytest.raises(CursorAhead, match="ahead"):
        await engine.subscribe("lobby", cursor=Cursor(epoch, 2), user="bob")


async def test_event_published_during_catch_up_is_delivered_once_in_order(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine()
    await post(engine, "a")
    epoch = (await engine.get_room("lobby")).epoch
    await post(engine, "b")
    await post(engine, "c")
    sub = await engine.subscribe("lobby", cursor=Cursor(epoch, 1), user="bob")
    iterator = aiter(sub)
    first = await anext(iterator)  # catch-up has started
    await post(engine, "d")  # published while the replay is still being read
    rest = await take(sub, 2)
    events = [first, *rest]
    await post(engine, "e")
    events += await take(sub, 1)
    assert texts(events) == ["b", "c", "d", "e"]
    assert [e.offset for e in events] == [2, 3, 4, 5]


async def test_concurrent_publishers_give_every_subscriber_the_same_order(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine()
    subs = [await engine.subscribe("lobby", cursor=None, user=f"u{i}") for i in range(3)]

    async def publisher(name: str) -> None:
        for i in range(50):
            await post(engine, f"{name}{i}")
            await asyncio.sleep(0)

    await asyncio.gather(*(publisher(p) for p in "xyz"))
    orders = [[(e.offset, texts([e])[0]) for e in await take(s, 150)] for s in subs]
    assert orders[0] == orders[1] == orders[2]
    assert [o for o, _ in orders[0]] == list(range(1, 151))


async def test_slow_subscriber_is_ended_without_slowing_others(make_engine: MakeEngine) -> None:
    engine = await make_engine(subscriber_buffer=8)
    slow = await engine.subscribe("lobby", cursor=None, user="slow")
    fast = await engine.subscribe("lobby", cursor=None, user="fast")
    received: list[Event] = []

    async def read_fast() -> None:
        async for event in fast:
            if event.durable:
                received.append(event)
                if len(received) == 40:
                    return

    reader = asyncio.create_task(read_fast())
    for i in range(40):
        await post(engine, f"m{i}")
        await asyncio.sleep(0)
    await asyncio.wait_for(reader, 2)
    assert [e.offset for e in received] == list(range(1, 41))
    got: list[Event] = []

    async def drain_slow() -> None:
        async for event in slow:
            got.append(event)

    with pytest.raises(SubscriberOverflow, match="behind"):
        await drain_slow()
    assert len(got) <= 8  # what was buffered is delivered, then the stream ends


async def test_idempotent_post_returns_the_original_and_stores_nothing(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(idempotency_window_s=0.4)
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
    await asyncio.sleep(0.5)  # the window passes
    later = await engine.post_message(
        "lobby", text="hi", attributes={}, sender="a", request_id="r1"
    )
    assert not later.duplicate
    assert later.message.offset == 2


async def test_presence_counts_users_once_with_join_and_leave_events(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine()
    watcher = await engine.subscribe("lobby", cursor=None, user="watcher")
    a1 = await engine.subscribe("lobby", cursor=None, user="alice")
    a2 = await engine.subscribe("lobby", cursor=None, user="alice")
    members = await engine.list_members("lobby")
    assert [(m.user, m.connections) for m in members] == [("alice", 2), ("watcher", 1)]
    await a1.close()
    await a1.close()  # idempotent
    await a2.close()
    assert [m.user for m in await engine.list_members("lobby")] == ["watcher"]
    events = await take(watcher, 3, durable_only=False)
    kinds = [(e.kind, e.user) for e in events]
    assert kinds == [
        (EventKind.MEMBER_JOINED, "watcher"),
        (EventKind.MEMBER_JOINED, "alice"),
        (EventKind.MEMBER_LEFT, "alice"),
    ]
    assert all(not e.durable and e.cursor is None for e in events)


async def test_history_pages_both_directions_with_edits_and_deletes(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine()
    ids = []
    for i in range(1, 6):
        result = await engine.post_message("lobby", text=f"m{i}", attributes={}, sender="alice")
        ids.append(result.message.message_id)
    await engine.edit_message("lobby", ids[1], text="m2!", attributes=None, actor="alice")
    await engine.delete_message("lobby", ids[2], actor=None)
    back = await engine.read_history("lobby", start_offset=0, forward=False, limit=2)
    assert [m.text for m in back.messages] == ["m5", "m4"]
    nxt = await engine.read_history("lobby", start_offset=back.next_offset, forward=False, limit=2)
    assert [m.text for m in nxt.messages] == ["m2!", "m1"]
    fwd = await engine.read_history("lobby", start_offset=0, forward=True, limit=10)
    assert [m.text for m in fwd.messages] == ["m1", "m2!", "m4", "m5"]
    assert fwd.next_offset == 0
    assert fwd.last_offset == 7
    with pytest.raises(CursorAhead):
        await engine.read_history("lobby", start_offset=99, forward=True, limit=1)


async def test_only_the_sender_or_an_admin_changes_a_message(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    result = await engine.post_message("lobby", text="mine", attributes={}, sender="alice")
    with pytest.raises(PermissionDenied, match="alice"):
        await engine.edit_message(
            "lobby", result.message.message_id, text="x", attributes=None, actor="mallory"
        )
    await engine.delete_message("lobby", result.message.message_id, actor=None)
    with pytest.raises(NotFound):
        await engine.delete_message("lobby", result.message.message_id, actor=None)


async def test_rooms_create_update_with_etag_and_delete_ends_subscriptions(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine()
    with pytest.raises(AlreadyExists):
        await engine.create_room("lobby", display_name="", description="", labels={}, creator="u")
    room = await engine.get_room("lobby")
    updated = await engine.update_room(
        "lobby", RoomChanges(description="hello"), expected_etag=room.etag
    )
    assert updated.description == "hello"
    assert updated.etag != room.etag
    with pytest.raises(EtagMismatch, match="etag"):
        await engine.update_room("lobby", RoomChanges(description="x"), expected_etag=room.etag)
    sub = await engine.subscribe("lobby", cursor=None, user="bob")
    await engine.delete_room("lobby", expected_etag=updated.etag)
    with pytest.raises(NotFound, match="deleted"):
        await take(sub, 1)
    with pytest.raises(NotFound):
        await engine.get_room("lobby")


async def test_list_rooms_pages_in_id_order(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    for room_id in ["c", "a", "b"]:
        await engine.create_room(room_id, display_name="", description="", labels={}, creator="u")
    first = await engine.list_rooms(after="", limit=2)
    assert [r.room_id for r in first] == ["a", "b"]
    rest = await engine.list_rooms(after="b", limit=10)
    assert [r.room_id for r in rest] == ["c", "lobby"]


async def test_close_ends_every_subscription_and_refuses_calls(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    sub = await engine.subscribe("lobby", cursor=None, user="bob")

    async def drain(subscription: Subscription) -> None:
        async for _ in subscription:
            pass

    await engine.close()
    with pytest.raises(EngineClosed):
        await drain(sub)
    with pytest.raises(EngineClosed):
        await engine.get_room("lobby")
