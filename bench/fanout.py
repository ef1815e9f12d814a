"""Scenario "fanout": one room, many subscribers, one publisher at a fixed rate.

For each subscriber count (100 and 1,000; 5,000 with --full) and each path — SSE through the
gateway with shared upstream streams (the default: one StreamShareService call carries the
room for all of the gateway's subscribers), SSE through a gateway started with ``--no-share``
(one upstream Subscribe per subscriber), and gRPC Subscribe straight to the service — a fresh
service (and gateway) is
started, the subscribers connect from receiver processes (never the gateway's), and once all
are subscribed the publisher posts ``messages`` messages over gRPC at ``rate``/s, each text
``"<seq> <send time ns>"``. Reported: deliveries/s (all deliveries over first send → last
receive), the offered rate (the publisher is open loop: it keeps its schedule whatever the
latency), publish→receive latency p50/p99 measured by the receivers, the
CPU seconds the gateway and the service spent per 1,000 deliveries, and the exactly-once
in-order check: every subscriber must receive every message once, in order. Violations,
losses and failed streams are counted and sampled in the result, never hidden.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench.crowd import Crowd, merge
from bench.procs import Server, stack
from bench.receivers import Plan
from bench.rest import create_room
from bench.stats import percentiles_ms, ratio
from switchboard.v1 import chat_pb2, chat_pb2_grpc

OFFERED_DELIVERIES_PER_S = 25_000
RECEIVER_PROCESSES = 2
TARGET_DELIVERIES_PER_S = 20_000
MAX_IN_FLIGHT = 64
DRAIN_TIMEOUT_S = 45.0  # after the last publish; a subscriber still short then is "missing"


async def _publish_async(address: str, room: str, messages: int, rate: float) -> tuple[int, int]:
    """Open loop: message ``seq`` is sent at start + seq / rate whether or not earlier posts
    have returned (at most MAX_IN_FLIGHT pending). Returns (first send ns, failures)."""
    failures = 0
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    async with grpc.aio.insecure_channel(address) as channel:
        chat = chat_pb2_grpc.ChatServiceStub(channel)

        async def post(seq: int) -> None:
            nonlocal failures
            message = chat_pb2.Message(text=f"{seq} {time.time_ns()}")
            try:
                await chat.PostMessage(
                    chat_pb2.PostMessageRequest(parent=room, message=message), timeout=30
                )
            except grpc.aio.AioRpcError:
                failures += 1
            finally:
                gate.release()

        loop = asyncio.get_running_loop()
        start, first_ns, pending = loop.time(), time.time_ns(), []
        for seq in range(messages):
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            pending.append(asyncio.create_task(post(seq)))
        await asyncio.gather(*pending)
    return first_ns, failures


def _publish(address: str, room: str, messages: int, rate: float) -> tuple[int, int]:
    return asyncio.run(_publish_async(address, room, messages, rate))


def _cpu(servers: list[Server]) -> dict[str, float]:
    return {server.name: server.cpu_seconds() for server in servers}


Observer = Callable[[list[Server], Callable[[], None]], None]
"""Runs the publish step itself, e.g. under a profiler of the servers (bench.profiling)."""


PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gateway_sse": ("sse", ()),
    "gateway_sse_private": ("sse", ("--no-share",)),
    "direct_grpc": ("grpc", ()),
}
"""Result key → (receiver transport, extra gateway flags)."""


def _one_run(
    transport: str,
    subscribers: int,
    duration_s: float,
    scratch: Path,
    observe: Observer | None = None,
    gateway_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    rate = OFFERED_DELIVERIES_PER_S / subscribers
    messages = max(10, round(rate * duration_s))
    room_id = f"fanout{subscribers}"
    room = f"rooms/{room_id}"
    with stack(scratch, gateway=transport == "sse", gateway_args=gateway_args) as (
        service,
        gateway,
    ):
        create_room(service.address, room_id)
        target = gateway.url if gateway is not None else service.address
        servers = [s for s in (gateway, service) if s is not None]
        plan = Plan(
            transport=transport, target=target, room=room, count=subscribers, expected=messages
        )
        with Crowd(plan, processes=RECEIVER_PROCESSES) as crowd:
            ready_s = time.monotonic()
            all_ready = crowd.wait_ready(60 + subscribers / 50)
            ready_s = time.monotonic() - ready_s
            before = _cpu(servers)
            published: list[tuple[int, int]] = []

            def publish() -> None:
                published.append(_publish(service.address, room, messages, rate))

            (observe or (lambda _servers, step: step()))(servers, publish)
            first_ns, failures = published[0]
            tally = merge(crowd.finish(timeout_s=DRAIN_TIMEOUT_S))
            after = _cpu(servers)
    return _summarise(
        tally, subscribers, messages, rate, first_ns, failures, all_ready, ready_s, before, after
    )


def _summarise(
    tally: Any, subscribers: int, messages: int, rate: float, first_ns: int, failures: int,
    all_ready: bool, ready_s: float, before: dict[str, float], after: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    deliveries = sum(tally.received)
    span_s = (tally.last_receive_ns - first_ns) / 1e9 if tally.last_receive_ns else 0.0
    expected = subscribers * messages
    complete = sum(1 for count in tally.received if count == messages)
    cpu = {
        f"{name}_cpu_s_per_1k_deliveries": round(
            (after[name] - before[name]) / deliveries * 1000, 4
        )
        for name in before
        if deliveries
    }
    return {
        "subscribers": subscribers,
        "messages": messages,
        "publish_rate_per_s": round(rate, 2),
        "offered_deliveries_per_s": OFFERED_DELIVERIES_PER_S,
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "missing_at_stop": expected - deliveries,
        "subscribers_complete": complete,
        "order_violations": tally.violations,
        "violation_samples": tally.violation_samples,
        "stream_errors": len(tally.stream_errors),
        "stream_error_samples": tally.stream_errors[:10],
        "publish_failures": failures,
        "all_subscribed": all_ready,
        "subscribe_all_s": round(ready_s, 2),
        "deliveries_per_s": round(deliveries / span_s, 1) if span_s > 0 else None,
        "latency": percentiles_ms(tally.latencies_s),
        **cpu,
        "exactly_once_in_order": bool(
            all_ready
            and deliveries == expected
            and not tally.violations
            and not tally.stream_errors
        ),
    }


def run(*, full: bool, scratch: Path) -> dict[str, Any]:
    counts = (100, 1_000, 5_000) if full else (100, 1_000)
    duration_s = 10.0 if full else 4.0
    rows: dict[str, dict[str, Any]] = {}
    for subscribers in counts:
        runs = {
            key: _one_run(transport, subscribers, duration_s, scratch, gateway_args=args)
            for key, (transport, args) in PATHS.items()
        }
        sse, private = runs["gateway_sse"], runs["gateway_sse_private"]
        rows[str(subscribers)] = {
            **runs,
            "sse_vs_grpc_deliveries_per_s": ratio(
                sse["deliveries_per_s"], runs["direct_grpc"]["deliveries_per_s"]
            ),
            "shared_vs_private_deliveries_per_s": ratio(
                sse["deliveries_per_s"], private["deliveries_per_s"]
            ),
        }
    at_1000 = rows["1000"]["gateway_sse"]
    met = bool(
        at_1000["exactly_once_in_order"]
        and (at_1000["deliveries_per_s"] or 0) >= TARGET_DELIVERIES_PER_S
    )
    return {
        "duration_s": duration_s,
        "receiver_processes": RECEIVER_PROCESSES,
        "runs": rows,
        "target": f">= {TARGET_DELIVERIES_PER_S:,} deliveries/s over SSE with 1,000 subscribers, "
        "zero loss, no reordering",
        "target_met": met,
    }
