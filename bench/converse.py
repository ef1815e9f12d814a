"""Scenario "converse": the bidi Converse call as a chat client uses it, gateway vs direct gRPC.

100 concurrent conversations, each in its own room (so a round trip measures the path, not a
fan-out). A conversation subscribes (first request: the room), then loops: post a message
whose text is ``"<seq> <send ns>"`` and wait for the room event carrying that text — the
post→own-event round trip. Over the WebSocket bridge (JSON subprotocol, frames from
gateway/frames.py) and over gRPC straight to the service, in two spawned client processes
of 50 conversations each. Reported: round trips/s, p50/p99, and whether every conversation
saw its own events in order.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

from bench.procs import raise_fd_limit, stack
from bench.rest import create_room
from bench.stats import percentiles_ms, ratio

CONVERSATIONS = 100
CLIENT_PROCESSES = 2


class Conversation:
    """One conversation's counters and order check."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.out_of_order = 0


async def _ws_conversation(url: str, stop_at: float, record: Conversation) -> None:
    import websockets
    from websockets.typing import Subprotocol

    async with websockets.connect(
        url, subprotocols=[Subprotocol("switchboard.grpc.json.v1")], open_timeout=60
    ) as ws:
        await ws.send('{"message":{}}')
        await _ws_until(ws, lambda event: "subscribed" in event)
        seq = 0
        while time.monotonic() < stop_at:
            text = f"{seq} {time.perf_counter_ns()}"
            started = time.perf_counter()
            frame = {"message": {"post": {"message": {"text": text}, "requestId": f"r{seq}"}}}
            await ws.send(orjson.dumps(frame).decode())
            event = await _ws_until(ws, lambda e: "messagePosted" in e)
            if event["messagePosted"]["text"] != text:
                record.out_of_order += 1
            record.latencies.append(time.perf_counter() - started)
            seq += 1


async def _ws_until(ws: Any, wanted: Any) -> dict[str, Any]:
    """Reads frames until a room event ``wanted`` accepts; acks are skipped."""
    while True:
        frame = orjson.loads(await ws.recv())
        if "status" in frame:
            raise RuntimeError(f"status frame: {frame['status']}")
        event = frame["result"].get("event")
        if event is not None and wanted(event):
            return dict(event)


async def _grpc_conversation(channel: Any, room: str, stop_at: float, record: Conversation) -> None:
    from switchboard.v1 import chat_pb2, chat_pb2_grpc

    call = chat_pb2_grpc.ChatServiceStub(channel).Converse()
    await call.write(chat_pb2.ConverseRequest(room=room))
    await _grpc_until(call, "subscribed")
    seq = 0
    while time.monotonic() < stop_at:
        text = f"{seq} {time.perf_counter_ns()}"
        started = time.perf_counter()
        post = chat_pb2.ConversePost(message=chat_pb2.Message(text=text), request_id=f"r{seq}")
        await call.write(chat_pb2.ConverseRequest(post=post))
        event = await _grpc_until(call, "message_posted")
        if event.message_posted.text != text:
            record.out_of_order += 1
        record.latencies.append(time.perf_counter() - started)
        seq += 1
    call.cancel()


async def _grpc_until(call: Any, kind: str) -> Any:
    from switchboard.v1 import chat_pb2

    while True:
        response = await call.read()
        if not isinstance(response, chat_pb2.ConverseResponse):  # grpc.aio.EOF
            raise RuntimeError("Converse ended early")
        if response.WhichOneof("kind") == "event" and response.event.WhichOneof("kind") == kind:
            return response.event


async def _clients(transport: str, target: str, rooms: list[str], seconds: float) -> dict[str, Any]:
    records = [Conversation() for _ in rooms]
    stop_at = time.monotonic() + seconds
    channel = None
    if transport == "grpc":
        import grpc

        channel = grpc.aio.insecure_channel(target)

    async def one(room: str, record: Conversation) -> None:
        try:
            if channel is not None:
                await _grpc_conversation(channel, room, stop_at, record)
            else:
                url = target.replace("http://", "ws://") + f"/v1/{room}:converse"
                await _ws_conversation(url, stop_at, record)
        except Exception as error:  # reported, never hidden
            record.errors.append(f"{room}: {type(error).__name__}: {error}"[:300])

    started = time.monotonic()
    await asyncio.gather(*(one(room, record) for room, record in zip(rooms, records, strict=True)))
    elapsed = time.monotonic() - started
    if channel is not None:
        await channel.close(None)
    return {
        "latencies": [x for r in records for x in r.latencies],
        "errors": [e for r in records for e in r.errors],
        "out_of_order": sum(r.out_of_order for r in records),
        "seconds": elapsed,
    }


def _client_entry(transport: str, target: str, rooms: list[str], seconds: float) -> dict[str, Any]:
    raise_fd_limit()
    return asyncio.run(_clients(transport, target, rooms, seconds))


def _one(transport: str, seconds: float, scratch: Path) -> dict[str, Any]:
    room_ids = [f"conv{index}" for index in range(CONVERSATIONS)]
    with stack(scratch, gateway=transport == "ws") as (service, gateway):
        for room_id in room_ids:
            create_room(service.address, room_id)
        target = gateway.url if gateway is not None else service.address
        rooms = [f"rooms/{room_id}" for room_id in room_ids]
        shares = [rooms[index::CLIENT_PROCESSES] for index in range(CLIENT_PROCESSES)]
        with ProcessPoolExecutor(CLIENT_PROCESSES, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_client_entry, transport, target, share, seconds) for share in shares
            ]
            parts = [future.result(timeout=seconds + 120) for future in futures]
    latencies = [x for part in parts for x in part["latencies"]]
    errors = [e for part in parts for e in part["errors"]]
    elapsed = max(part["seconds"] for part in parts)
    return {
        "conversations": CONVERSATIONS,
        "round_trips": len(latencies),
        "round_trips_per_s": round(len(latencies) / elapsed, 1),
        "latency": percentiles_ms(latencies),
        "own_event_mismatches": sum(part["out_of_order"] for part in parts),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def run(*, full: bool, scratch: Path) -> dict[str, Any]:
    seconds = 15.0 if full else 5.0
    ws = _one("ws", seconds, scratch)
    direct = _one("grpc", seconds, scratch)
    return {
        "seconds": seconds,
        "gateway_websocket": ws,
        "direct_grpc": direct,
        "websocket_vs_grpc_round_trips_per_s": ratio(
            ws["round_trips_per_s"], direct["round_trips_per_s"]
        ),
        "websocket_vs_grpc_p50": ratio(
            ws["latency"].get("p50_ms"), direct["latency"].get("p50_ms")
        ),
    }
