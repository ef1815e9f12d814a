"""Fan-out: one order for every subscriber, and slow consumers cut off alone."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from services.config import ServiceConfig
from services.testing import ServerHandle
from switchboard.v1 import chat_pb2
from tests.services.conftest import ServerFactory, as_user, ended_with, make_room, read, within


def subscribe(server: ServerHandle, user: str, channel: Any = None) -> Any:
    request = chat_pb2.SubscribeRequest(room="rooms/lobby")
    stub = server.chat if channel is None else type(server.chat)(channel)
    return stub.Subscribe(request, metadata=as_user(user))


async def posted_offsets(call: Any, count: int) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    while len(seen) < count:
        event = await read(call)
        if event.WhichOneof("kind") == "message_posted":
            seen.append((event.offset, event.message_posted.text))
    return seen


async def test_concurrent_publishers_every_subscriber_sees_one_order(
    server: ServerHandle,
) -> None:
    await make_room(server)
    subscribers = [subscribe(server, f"s{i}", server.channel()) for i in range(3)]
    for call in subscribers:
        await read(call)

    async def publish(name: str) -> None:
        stub = type(server.chat)(server.channel())
        for i in range(25):
            message = chat_pb2.Message(text=f"{name}-{i}")
            request = chat_pb2.PostMessageRequest(parent="rooms/lobby", message=message)
            await stub.PostMessage(request, metadata=as_user(name))

    await within(asyncio.gather(*(publish(f"p{i}") for i in range(4))), 30)
    orders = [await posted_offsets(call, 100) for call in subscribers]
    assert [offset for offset, _ in orders[0]] == list(range(1, 101))
    assert orders[1] == orders[0]
    assert orders[2] == orders[0]
    for name in ("p0", "p1", "p2", "p3"):  # each publisher's own posts keep their order
        mine = [text for _, text in orders[0] if text.startswith(name + "-")]
        assert mine == [f"{name}-{i}" for i in range(25)]
    for call in subscribers:
        call.cancel()


async def test_a_stalled_subscriber_is_cut_off_while_a_fast_one_gets_everything(
    start_server: ServerFactory,
) -> None:
    config = ServiceConfig(subscriber_buffer=8, max_message_bytes=256 * 1024)
    async with start_server(config) as server:
        await make_room(server)
        # A separate channel with flow control kept small, so the stalled reader's
        # transport windows fill and the server-side subscription backs up.
        stalled_channel = grpc.aio.insecure_channel(
            server.address,
            options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
        )
        stalled = subscribe(server, "slow", stalled_channel)
        await read(stalled)
        fast = subscribe(server, "fast", server.channel())
        await read(fast)

        text = "x" * (200 * 1024)
        total = 120
        fast_seen: list[tuple[int, str]] = []
        for i in range(total):
            request = chat_pb2.PostMessageRequest(
                parent="rooms/lobby", message=chat_pb2.Message(text=f"{i}:{text}")
            )
            await within(server.chat.PostMessage(request))
            fast_seen += await posted_offsets(fast, 1)  # the fast reader keeps up
        assert [offset for offset, _ in fast_seen] == list(range(1, total + 1))

        error = await ended_with(stalled, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "resume" in error.details()
        await stalled_channel.close()
        fast.cancel()
