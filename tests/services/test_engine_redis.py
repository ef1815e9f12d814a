"""The Redis engine across instances: two RedisEngine objects (two "processes", each
with its own connections) on one private redis-server, and the real gRPC server on it."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.config import ConfigError, ServiceConfig
from services.engine import (
    Cursor,
    EngineClosed,
    EngineConfig,
    Event,
    EventKind,
    NotFound,
    Subscription,
)
from services.engine.redis import RedisEngine, RoomKeys
from services.server import open_engine
from services.testing import running_server
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.services.redis_server import fresh_prefix
from tests.services.test_engine_contract import post, take, texts

Pair = tuple[RedisEngine, RedisEngine]
TIMEOUT = 15.0  # a hang guard, not a speed check


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[Pair]:
    """Two instances sharing one Redis namespace, with a room ``lobby``."""
    prefix = fresh_prefix()
    a = RedisEngine(redis_url, prefix=prefix)
    b = RedisEngine(redis_url, prefix=prefix)
    await a.create_room("lobby", display_name="Lobby", description="", labels={}, creator="u")
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def next_of(subscription: Subscription, kind: EventKind) -> Event:
    async with asyncio.timeout(TIMEOUT):
        async for event in subscription:
            if event.kind is kind:
                return event
    raise AssertionError(f"the subscription ended before a {kind} event")


async def test_concurrent_publishers_on_two_instances_give_one_gapless_order(pair: Pair) -> None:
    a, b = pair
    subs = [await e.subscribe("lobby", cursor=None, user=f"u{i}") for i, e in enumerate(pair * 2)]

    async def publisher(engine: RedisEngine, name: str) -> None:
        for i in range(40):
            await post(engine, f"{name}{i}")

    await asyncio.gather(publisher(a, "a"), publisher(b, "b"), publisher(a, "c"))
    orders = [[(e.offset, texts([e])[0]) for e in await take(s, 120)] for s in subs]
    assert orders[0] == orders[1] == orders[2] == orders[3]
    assert [offset for offset, _ in orders[0]] == list(range(1, 121))
    assert sorted(text for _, text in orders[0]) == sorted(
        f"{name}{i}" for name in "abc" for i in range(40)
    )


async def test_a_cursor_from_instance_a_resumes_on_instance_b(pair: Pair) -> None:
    a, b = pair
    for i in range(3):
        await post(a, f"seen{i}")
    epoch = (await a.get_room("lobby")).epoch
    for i in range(4):
        await post(a, f"missed{i}")
    sub = await b.subscribe("lobby", cursor=Cursor(epoch, 3), user="bob")
    assert sub.recovered
    await post(a, "live")
    events = await take(sub, 5)
    assert texts(events) == ["missed0", "missed1", "missed2", "missed3", "live"]
    assert [(e.offset, e.epoch) for e in events] == [(o, epoch) for o in range(4, 9)]


async def test_resume_while_the_other_instance_publishes_is_exactly_once(pair: Pair) -> None:
    a, b = pair
    for i in range(20):
        await post(a, f"m{i}")
    epoch = (await a.get_room("lobby")).epoch

    async def publish_more() -> None:
        for i in range(20, 80):
            await post(a, f"m{i}")

    publisher = asyncio.create_task(publish_more())
    await asyncio.sleep(0)  # the publisher has started
    resumed = await b.subscribe("lobby", cursor=Cursor(epoch, 5), user="bob")
    assert resumed.recovered
    events = await take(resumed, 75)
    await publisher
    assert [e.offset for e in events] == list(range(6, 81))
    assert texts(events) == [f"m{i}" for i in range(5, 80)]


async def test_a_room_read_again_after_its_last_subscriber_left_still_gets_typing(
    pair: Pair,
) -> None:
    a, b = pair
    first = await a.subscribe("lobby", cursor=None, user="bob")
    await first.close()
    again = await a.subscribe("lobby", cursor=None, user="bob")
    await b.publish_typing("lobby", user="carol", active=True)
    assert (await next_of(again, EventKind.TYPING)).user == "carol"


async def test_typing_and_presence_cross_instances(pair: Pair) -> None:
    a, b = pair
    watcher = await a.subscribe("lobby", cursor=None, user="watcher")
    assert (await next_of(watcher, EventKind.MEMBER_JOINED)).user == "watcher"
    alice = await b.subscribe("lobby", cursor=None, user="alice")
    assert (await next_of(watcher, EventKind.MEMBER_JOINED)).user == "alice"
    members = await a.list_members("lobby")
    assert [(m.user, m.connections) for m in members] == [("alice", 1), ("watcher", 1)]
    await b.publish_typing("lobby", user="alice", active=True)
    typing = await next_of(watcher, EventKind.TYPING)
    assert (typing.user, typing.active, typing.durable) == ("alice", True, False)
    await alice.close()
    assert (await next_of(watcher, EventKind.MEMBER_LEFT)).user == "alice"
    assert [m.user for m in await b.list_members("lobby")] == ["watcher"]


async def test_a_user_connected_to_both_instances_joins_and_leaves_once(pair: Pair) -> None:
    a, b = pair
    watcher = await a.subscribe("lobby", cursor=None, user="watcher")
    on_a = await a.subscribe("lobby", cursor=None, user="alice")
    on_b = await b.subscribe("lobby", cursor=None, user="alice")
    assert [(m.user, m.connections) for m in await b.list_members("lobby")] == [
        ("alice", 2),
        ("watcher", 1),
    ]
    await on_a.close()
    await on_b.close()
    await b.publish_typing("lobby", user="marker", active=False)
    seen: list[tuple[EventKind, str]] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in watcher:
            if event.kind is EventKind.TYPING:
                break
            seen.append((event.kind, event.user))
    assert seen == [
        (EventKind.MEMBER_JOINED, "watcher"),
        (EventKind.MEMBER_JOINED, "alice"),
        (EventKind.MEMBER_LEFT, "alice"),
    ]


async def test_members_of_an_instance_that_died_expire_with_its_lease(
    pair: Pair, redis: Redis
) -> None:
    a, _ = pair
    watcher = await a.subscribe("lobby", cursor=None, user="watcher")
    keys = RoomKeys(a.prefix, "lobby")
    now_ms = time.time_ns() // 1_000_000
    # What a crashed instance leaves behind: a count under a lease it no longer renews.
    await redis.hset(keys.key("inst:dead"), "ghost", 1)
    await redis.zadd(keys.key("instances"), {"dead": now_ms - 1})
    await redis.hset(keys.key("joined"), "ghost", time.time_ns())
    assert [m.user for m in await a.list_members("lobby")] == ["watcher"]
    assert (await next_of(watcher, EventKind.MEMBER_LEFT)).user == "ghost"


async def test_redis_losing_the_stream_starts_a_new_epoch(pair: Pair, redis: Redis) -> None:
    a, b = pair
    await post(a, "one")
    await post(a, "two")
    old = await a.get_room("lobby")
    live = await b.subscribe("lobby", cursor=None, user="bob")
    await redis.delete(RoomKeys(a.prefix, "lobby").key("stream"))
    room = await b.get_room("lobby")
    assert room.epoch != old.epoch
    assert room.last_offset == 0
    with pytest.raises(EngineClosed, match="lost"):
        await take(live, 1)
    resumed = await a.subscribe("lobby", cursor=Cursor(old.epoch, 1), user="bob")
    assert not resumed.recovered
    assert await post(b, "three") == 1
    assert texts(await take(resumed, 1)) == ["three"]
    page = await a.read_history("lobby", start_offset=0, forward=True, limit=10)
    assert ([m.text for m in page.messages], page.epoch) == (["three"], room.epoch)


async def test_a_request_id_is_idempotent_across_instances(pair: Pair) -> None:
    a, b = pair
    first = await a.post_message("lobby", text="hi", attributes={}, sender="s", request_id="r1")
    again = await b.post_message("lobby", text="hi", attributes={}, sender="s", request_id="r1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.message == first.message
    assert (await b.get_room("lobby")).last_offset == 1


async def test_deleting_a_room_on_one_instance_ends_subscribers_on_the_other(pair: Pair) -> None:
    a, b = pair
    sub = await b.subscribe("lobby", cursor=None, user="bob")
    await a.delete_room("lobby")
    with pytest.raises(NotFound, match="deleted"):
        await take(sub, 1)
    with pytest.raises(NotFound):
        await b.get_room("lobby")


async def test_edits_on_one_instance_show_in_history_and_streams_of_the_other(pair: Pair) -> None:
    a, b = pair
    sub = await b.subscribe("lobby", cursor=None, user="bob")
    posted = await a.post_message("lobby", text="x", attributes={}, sender="s")
    await b.edit_message(
        "lobby", posted.message.message_id, text="y", attributes={"k": "v"}, actor="s"
    )
    _, edited = await take(sub, 2)
    assert edited.kind is EventKind.MESSAGE_EDITED
    assert edited.message is not None
    assert (edited.message.text, edited.message.offset, edited.offset) == ("y", 1, 2)
    page = await a.read_history("lobby", start_offset=0, forward=False, limit=5)
    assert [(m.text, dict(m.attributes)) for m in page.messages] == [("y", {"k": "v"})]


async def test_subscribe_resumes_through_two_grpc_servers_sharing_redis(pair: Pair) -> None:
    one, two = pair
    async with running_server(engine=one) as first, running_server(engine=two) as second:
        room = await first.rooms.GetRoom(rooms_pb2.GetRoomRequest(name="rooms/lobby"))
        for text in ("a", "b", "c"):
            request = chat_pb2.PostMessageRequest(
                parent="rooms/lobby", message=chat_pb2.Message(text=text)
            )
            await first.chat.PostMessage(request, timeout=TIMEOUT)
        cursor = Cursor(room.epoch, 1).encode()
        call = second.chat.Subscribe(
            chat_pb2.SubscribeRequest(room="rooms/lobby", cursor=cursor), timeout=TIMEOUT
        )
        subscribed = await call.read()
        assert subscribed.subscribed.recovered
        assert subscribed.subscribed.offset == 3
        await first.chat.PostMessage(
            chat_pb2.PostMessageRequest(parent="rooms/lobby", message=chat_pb2.Message(text="d")),
            timeout=TIMEOUT,
        )
        received = []
        while len(received) < 3:
            event = await call.read()
            if event.offset:
                received.append((event.offset, event.message_posted.text))
        assert received == [(2, "b"), (3, "c"), (4, "d")]
        call.cancel()


def test_engine_setting_accepts_memory_or_a_redis_url() -> None:
    parser = argparse.ArgumentParser()
    ServiceConfig.add_arguments(parser)
    assert ServiceConfig.from_namespace(parser.parse_args([]), {}).engine == "memory"
    env = {"SWITCHBOARD_ENGINE": "redis://cache:6379/2"}
    assert (
        ServiceConfig.from_namespace(parser.parse_args([]), env).engine == env["SWITCHBOARD_ENGINE"]
    )
    flag = parser.parse_args(["--engine", "redis://flag:1/0"])
    assert ServiceConfig.from_namespace(flag, env).engine == "redis://flag:1/0"
    with pytest.raises(ConfigError, match=r"--engine.*'mysql://x'"):
        ServiceConfig(engine="mysql://x")


async def test_open_engine_builds_the_configured_engine(redis_url: str) -> None:
    engine = await open_engine(ServiceConfig(engine=redis_url, history_max_events=7))
    assert isinstance(engine, RedisEngine)
    assert engine.config == EngineConfig(history_max_events=7)
    await engine.close()
    with pytest.raises(RuntimeError, match=r"cannot reach Redis at 'redis://127\.0\.0\.1:1/0'"):
        await open_engine(ServiceConfig(engine="redis://127.0.0.1:1/0"))
    with pytest.raises(RuntimeError, match="cannot reach") as info:
        await open_engine(ServiceConfig(engine="redis://:s3cret@127.0.0.1:1/0"))
    assert "s3cret" not in str(info.value)


BURST = 500
BURST_GUARD_S = 30.0  # a hang guard for a loaded machine, not a speed check


async def _drain(subscription: Subscription, count: int) -> list[tuple[int, str]]:
    """The first ``count`` durable events as (offset, text); closes the subscription."""
    received: list[tuple[int, str]] = []
    try:
        async for event in subscription:
            if event.durable:
                received.append((event.offset, texts([event])[0]))
                if len(received) == count:
                    break
    finally:
        await subscription.close()
    return received


@pytest.mark.parametrize("subscribers", [1, 50])
async def test_a_burst_reaches_every_subscriber_completely_in_order_once(
    redis_url: str, subscribers: int
) -> None:
    engine = RedisEngine(
        redis_url, EngineConfig(subscriber_buffer=BURST + 16), prefix=fresh_prefix()
    )
    try:
        await engine.create_room("burst", display_name="B", description="", labels={}, creator="u")
        async with asyncio.timeout(BURST_GUARD_S):
            subs = [
                await engine.subscribe("burst", cursor=None, user=f"u{i}")
                for i in range(subscribers)
            ]
            drains = [asyncio.create_task(_drain(sub, BURST)) for sub in subs]
            for i in range(BURST):
                await post(engine, f"m{i}", room="burst")
            received = await asyncio.gather(*drains)
    finally:
        await engine.close()
    expected = [(offset, f"m{offset - 1}") for offset in range(1, BURST + 1)]
    assert received == [expected] * subscribers


async def test_many_users_subscribing_at_once_all_get_their_stream(redis_url: str) -> None:
    engine = RedisEngine(redis_url, prefix=fresh_prefix())
    try:
        await engine.create_room("crowd", display_name="C", description="", labels={}, creator="u")
        async with asyncio.timeout(BURST_GUARD_S):
            subs = await asyncio.gather(
                *(engine.subscribe("crowd", cursor=None, user=f"u{i}") for i in range(150))
            )
            await post(engine, "hello", room="crowd")
            received = await asyncio.gather(*(_drain(sub, 1) for sub in subs))
    finally:
        await engine.close()
    assert received == [[(1, "hello")]] * 150


SOCKET_TIMEOUT_S = 0.1
IDLE_S = 1.5  # many socket timeouts (and the client's retries) without traffic


async def test_an_idle_subscription_outlives_the_socket_timeout(redis_url: str) -> None:
    url = f"{redis_url}?socket_timeout={SOCKET_TIMEOUT_S}"
    engine = RedisEngine(url, prefix=fresh_prefix())
    try:
        await engine.create_room("quiet", display_name="Q", description="", labels={}, creator="u")
        sub = await engine.subscribe("quiet", cursor=None, user="idler")
        await asyncio.sleep(IDLE_S)  # the idleness under test, not a wait for readiness
        await post(engine, "still there?", room="quiet")
        async with asyncio.timeout(TIMEOUT):
            assert await _drain(sub, 1) == [(1, "still there?")]
    finally:
        await engine.close()
