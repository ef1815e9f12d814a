"""Subscriber processes: many subscribers of one room, each checking what it receives.

``receive`` is the entry of one spawned process. It opens ``plan.count`` subscribers of
``plan.room`` over one transport — SSE through the gateway, gRPC Subscribe straight to the
service, or a WebSocket Converse through the gateway — and puts ``("ready", n)`` on the
queue as subscribers get their ``subscribed`` event (batched every 0.25 s). Published messages carry
``"<seq> <send time ns>"`` as their text. Each subscriber expects the room's offsets from
its ``subscribed`` position on — position + 1, + 2, … — exactly once and in order, and
records any violation (a gap, a duplicate, a reordering). Latency is receive time minus
send time (one clock: the same machine). The process ends when every
subscriber has ``plan.expected`` messages, or when ``stop`` (this process's own event) is
set (idle runs, time-outs); then it puts ``("result", Tally)`` on the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as StopEvent
from typing import Any, Protocol

import orjson

from bench.procs import raise_fd_limit

MAX_VIOLATIONS_KEPT = 20
READY_REPORT_S = 0.25
CONNECTING = 200


@dataclass(frozen=True)
class Plan:
    """What one receiver process does."""

    transport: str  # "sse" | "grpc" | "ws" | "ws-plain" (no permessage-deflate offered)
    target: str  # HTTP base URL (sse, ws) or HOST:PORT (grpc)
    room: str  # "rooms/<id>"
    count: int
    expected: int  # messages each subscriber must get; 0 for idle subscribers
    first_id: int = 0  # subscriber ids in reports are first_id, first_id + 1, …


@dataclass
class Tally:
    """What the subscribers of one process saw."""

    subscribers: int = 0
    ready: int = 0
    received: list[int] = field(default_factory=list)  # per subscriber
    violations: int = 0
    violation_samples: list[str] = field(default_factory=list)
    stream_errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    last_receive_ns: int = 0

    def violation(self, text: str) -> None:
        self.violations += 1
        if len(self.violation_samples) < MAX_VIOLATIONS_KEPT:
            self.violation_samples.append(text)


class Queue(Protocol):
    def put(self, item: Any) -> None: ...


class Subscriber:
    """One subscriber's exactly-once, in-order check on the room's offsets."""

    def __init__(self, ident: int, tally: Tally, on_subscribed: Callable[[], None]) -> None:
        self.ident = ident
        self.tally = tally
        self.next_offset = 1
        self.count = 0
        self._ready_signal = on_subscribed
        self.done = asyncio.Event()
        self.gate: asyncio.Semaphore | None = None

    def subscribed(self, position: int) -> None:
        self.next_offset = position + 1
        self._ready_signal()
        self.release_gate()

    def release_gate(self) -> None:
        """Lets the next subscriber start connecting (once; see ``_one``)."""
        if self.gate is not None:
            self.gate.release()
            self.gate = None

    def message(self, offset: int, text: str, expected: int) -> None:
        now = time.time_ns()
        if offset != self.next_offset:
            kind = "duplicate or reordered" if offset < self.next_offset else "gap"
            self.tally.violation(
                f"subscriber {self.ident}: got offset {offset}, "
                f"expected {self.next_offset} ({kind})"
            )
        self.next_offset = max(self.next_offset, offset + 1)
        self.count += 1
        self.tally.latencies_s.append((now - int(text.partition(" ")[2])) / 1e9)
        self.tally.last_receive_ns = max(self.tally.last_receive_ns, now)
        if expected and self.count >= expected:
            self.done.set()


def _handle_event(data: bytes, subscriber: Subscriber, expected: int) -> None:
    event = orjson.loads(data)
    if "result" in event:  # a WebSocket frame: {"result": ConverseResponse}
        event = event["result"].get("event", {})
    posted = event.get("messagePosted")
    if posted is not None:
        subscriber.message(int(event["offset"]), posted["text"], expected)
    elif "subscribed" in event:
        subscriber.subscribed(int(event["subscribed"].get("offset", 0)))


async def _sse(plan: Plan, subscriber: Subscriber, session: Any) -> None:
    url = f"{plan.target}/v1/{plan.room}:subscribe"
    async with session.get(url, headers={"Accept": "text/event-stream"}) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                _sse_block(block, subscriber, plan.expected)
            if subscriber.done.is_set():
                return


def _sse_block(block: bytes, subscriber: Subscriber, expected: int) -> None:
    data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return
    if block.startswith(b"event: error") or b"\nevent: error" in block:
        raise RuntimeError(f"event: error {b''.join(data)[:200]!r}")
    _handle_event(b"\n".join(data), subscriber, expected)


async def _ws(plan: Plan, subscriber: Subscriber, _session: Any, deflate: bool = True) -> None:
    import websockets
    from websockets.typing import Subprotocol

    url = plan.target.replace("http://", "ws://") + f"/v1/{plan.room}:converse"
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol("switchboard.grpc.json.v1")],
        max_queue=None,
        open_timeout=60,
        compression="deflate" if deflate else None,
    ) as socket:
        await socket.send('{"message":{}}')
        async for frame in socket:
            data = frame.encode() if isinstance(frame, str) else frame
            if data.startswith(b'{"status"'):
                raise RuntimeError(f"status frame {data[:200]!r}")
            _handle_event(data, subscriber, plan.expected)
            if subscriber.done.is_set():
                return


async def _grpc(plan: Plan, subscriber: Subscriber, channel: Any) -> None:
    from switchboard.v1 import chat_pb2, chat_pb2_grpc

    stub = chat_pb2_grpc.ChatServiceStub(channel)
    call = stub.Subscribe(chat_pb2.SubscribeRequest(room=plan.room))
    async for event in call:
        kind = event.WhichOneof("kind")
        if kind == "message_posted":
            subscriber.message(event.offset, event.message_posted.text, plan.expected)
        elif kind == "subscribed":
            subscriber.subscribed(event.subscribed.offset)
        if subscriber.done.is_set():
            call.cancel()
            return


async def _ws_plain(plan: Plan, subscriber: Subscriber, session: Any) -> None:
    await _ws(plan, subscriber, session, deflate=False)


Transport = Callable[[Plan, Subscriber, Any], Awaitable[None]]
TRANSPORTS: dict[str, Transport] = {"sse": _sse, "ws": _ws, "ws-plain": _ws_plain, "grpc": _grpc}


async def _one(
    plan: Plan, subscriber: Subscriber, shared: Any, tally: Tally, gate: asyncio.Semaphore
) -> None:
    """One subscriber. At most CONNECTING subscribers of a process are between "connect" and
    "subscribed" at once: thousands of clients do not all dial in the same millisecond, and
    a burst of thousands of new gRPC streams from one Python process stalls its client."""
    await gate.acquire()
    subscriber.gate = gate
    try:
        await TRANSPORTS[plan.transport](plan, subscriber, shared)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a stream that failed is a result: report it
        tally.stream_errors.append(
            f"subscriber {subscriber.ident}: {type(error).__name__}: {error}"[:300]
        )
    finally:
        subscriber.release_gate()
        subscriber.done.set()


async def _shared_resources(plan: Plan) -> tuple[Any, list[Any]]:
    """An aiohttp session (SSE) or gRPC channels (one per 100 streams); closables listed."""
    if plan.transport == "sse":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=60),
        )
        return session, [session]
    if plan.transport == "grpc":
        import grpc

        channels = [
            grpc.aio.insecure_channel(plan.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, plan.count // 100))
        ]
        return channels, channels
    return None, []


async def _receive(plan: Plan, queue: Queue, stop: StopEvent) -> Tally:
    tally = Tally(subscribers=plan.count)
    loop = asyncio.get_running_loop()

    def one_ready() -> None:
        tally.ready += 1

    async def report_ready() -> None:
        """Puts ("ready", newly subscribed) on the queue every READY_REPORT_S."""
        reported = 0
        while reported < plan.count:
            await asyncio.sleep(READY_REPORT_S)
            if tally.ready > reported:
                queue.put(("ready", tally.ready - reported))
                reported = tally.ready

    shared, closables = await _shared_resources(plan)
    subscribers = [Subscriber(plan.first_id + i, tally, one_ready) for i in range(plan.count)]
    tasks = []
    gate = asyncio.Semaphore(CONNECTING)
    for index, subscriber in enumerate(subscribers):
        resource = shared[index % len(shared)] if isinstance(shared, list) else shared
        tasks.append(asyncio.create_task(_one(plan, subscriber, resource, tally, gate)))
    reporter = asyncio.create_task(report_ready())
    all_done: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(*(s.done.wait() for s in subscribers))
    )
    stopped: asyncio.Future[Any] = loop.run_in_executor(None, stop.wait)
    await asyncio.wait([all_done, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, reporter]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    all_done.cancel()
    for closable in closables:
        with contextlib.suppress(Exception):
            await closable.close()
    stop.set()  # this process's own event: lets the executor thread waiting on it finish
    tally.received = [s.count for s in subscribers]
    return tally


def receive(plan: Plan, queue: Queue, stop: StopEvent) -> None:
    """Process entry: run the subscribers, then report the tally."""
    raise_fd_limit()
    try:
        tally = asyncio.run(_receive(plan, queue, stop))
    except Exception as error:  # the parent must hear about it rather than wait
        tally = Tally(subscribers=plan.count, stream_errors=[f"receiver crashed: {error!r}"])
    queue.put(("result", tally))
