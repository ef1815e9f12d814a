"""Closed-loop load generators: wrk for HTTP, and Python ones that run in their own process.

- ``wrk_run``: wrk with one thread and a Lua script whose ``done`` prints one JSON line
  (requests, errors, latency percentiles). POST bodies come from the same script.
- ``python_http_run``: the fallback when wrk is absent — aiohttp, ``connections``
  concurrent request loops (slower than wrk: the result says which generator ran).
- ``grpc_run``: ``connections`` concurrent loops of one unary gRPC call through one
  grpc.aio channel (the backend's ceiling as a Python client sees it).

Every run is a warm-up of ``warmup_s`` seconds, then ``duration_s`` measured seconds.
The Python ones run in a spawned process so they never share the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.stats import percentiles_ms

POST_BODY = '{"text":"a benchmark message","attributes":{"client":"bench"}}'
WRK_THREADS = 1
_DONE_LUA = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class HttpTarget:
    """One HTTP request the load repeats."""

    method: str  # "GET" or "POST"
    url: str
    body: str = ""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _wrk_script(target: HttpTarget, scratch: Path) -> Path:
    lines = []
    if target.method == "POST":
        body = target.body.replace("\\", "\\\\").replace("'", "\\'")
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = '{body}'",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    path = scratch / f"wrk-{target.method.lower()}.lua"
    path.write_text("\n".join(lines) + _DONE_LUA)
    return path


def _wrk_once(target: HttpTarget, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    argv = [
        "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(script), target.url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line.removeprefix("WRK_JSON ")))
    raise RuntimeError(f"wrk printed no result (status {done.returncode}): {done.stderr[-500:]}")


def wrk_run(
    target: HttpTarget, scratch: Path, *, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    script = _wrk_script(target, scratch)
    warm = _wrk_once(target, script, connections, warmup_s) if warmup_s > 0 else {"requests": 0}
    raw = _wrk_once(target, script, connections, duration_s)
    errors = sum(raw[key] for key in ("connect", "read", "write", "status", "timeout"))
    seconds = raw["duration_us"] / 1e6
    return {
        "generator": "wrk",
        "requests": raw["requests"],
        "all_requests": warm["requests"] + raw["requests"],
        "errors": errors,
        "non_2xx": raw["status"],
        "seconds": round(seconds, 3),
        "rps": round((raw["requests"] - errors) / seconds, 1),
        "latency": {
            "p50_ms": raw["p50_us"] / 1e3,
            "p90_ms": raw["p90_us"] / 1e3,
            "p99_ms": raw["p99_us"] / 1e3,
            "max_ms": raw["max_us"] / 1e3,
        },
    }


# ------------------------------------------------------------------ Python generators


Call = Callable[[], Awaitable[bool]]


async def _closed_loop(
    call: Call, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "all": 0}
    measuring = False
    stop_at = time.perf_counter() + warmup_s + duration_s

    async def worker() -> None:
        while (now := time.perf_counter()) < stop_at:
            ok = await call()
            counts["all"] += 1
            if measuring:
                latencies.append(time.perf_counter() - now)
                counts["ok" if ok else "errors"] += 1

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    if warmup_s > 0:
        await asyncio.sleep(warmup_s)
    measuring, started = True, time.perf_counter()
    await asyncio.gather(*workers)
    seconds = time.perf_counter() - started
    return {
        "requests": counts["ok"] + counts["errors"],
        "all_requests": counts["all"],
        "errors": counts["errors"],
        "seconds": round(seconds, 3),
        "rps": round(counts["ok"] / seconds, 1),
        "latency": percentiles_ms(latencies),
    }


async def _http(
    target: HttpTarget, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/json"} if target.body else {}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> bool:
            async with session.request(
                target.method, target.url, data=target.body or None, headers=headers
            ) as response:
                await response.read()
                return response.status < 300

        result = await _closed_loop(call, connections, warmup_s, duration_s)
    return {"generator": "python-aiohttp (wrk absent)", **result}


def _http_entry(
    target: HttpTarget, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    return asyncio.run(_http(target, connections, warmup_s, duration_s))


async def _grpc(
    address: str, method: str, room: str, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    import grpc

    from switchboard.v1 import chat_pb2, chat_pb2_grpc, rooms_pb2, rooms_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        chat, rooms = (
            chat_pb2_grpc.ChatServiceStub(channel),
            rooms_pb2_grpc.RoomServiceStub(channel),
        )
        post = chat_pb2.PostMessageRequest(
            parent=room,
            message=chat_pb2.Message(text="a benchmark message", attributes={"client": "bench"}),
        )
        get = rooms_pb2.GetRoomRequest(name=room)

        async def call() -> bool:
            try:
                if method == "PostMessage":
                    await chat.PostMessage(post, timeout=10)
                else:
                    await rooms.GetRoom(get, timeout=10)
            except grpc.aio.AioRpcError:
                return False
            return True

        result = await _closed_loop(call, connections, warmup_s, duration_s)
    return {"generator": "python grpc.aio client", **result}


def _grpc_entry(
    address: str, method: str, room: str, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    return asyncio.run(_grpc(address, method, room, connections, warmup_s, duration_s))


def _in_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result(timeout=600)


def python_http_run(
    target: HttpTarget, *, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    return _in_process(_http_entry, target, connections, warmup_s, duration_s)


def grpc_run(
    address: str, method: str, room: str, *, connections: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    return _in_process(_grpc_entry, address, method, room, connections, warmup_s, duration_s)
