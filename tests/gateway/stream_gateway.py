"""A real gateway for the streaming tests: build_app + the streaming bridges, on 127.0.0.1:0.

async with running_gateway(settings, StreamSettings(heartbeat=0.2)) as gateway:
    async with gateway.session.get(gateway.url("/v1/…")) as response: ...
    await gateway.shutdown()   # the graceful shutdown sequence, early (idempotent)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web

from gateway.app import build_app
from gateway.bridges.streaming import LIVE_STREAMS, LiveStreams, StreamSettings
from gateway.config import Settings


@dataclass
class Gateway:
    base: str
    runner: web.AppRunner
    session: aiohttp.ClientSession
    _stopped: bool = field(default=False, repr=False)

    def url(self, path: str) -> str:
        return self.base + path

    def ws_url(self, path: str) -> str:
        return "ws" + self.base.removeprefix("http") + path

    @property
    def live(self) -> LiveStreams:
        return self.runner.app[LIVE_STREAMS]

    async def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            await self.runner.cleanup()


@asynccontextmanager
async def running_gateway(
    settings: Settings, streams: StreamSettings | None = None
) -> AsyncIterator[Gateway]:
    app = build_app(replace(settings, streams=streams or StreamSettings()))
    runner = web.AppRunner(app, shutdown_timeout=5.0, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        gateway = Gateway(base=f"http://{host}:{port}", runner=runner, session=session)
        try:
            yield gateway
        finally:
            await gateway.shutdown()


async def eventually(condition: Callable[[], Awaitable[bool] | bool], *, within: float) -> float:
    """Poll ``condition`` until it holds; the seconds it took (AssertionError after ``within``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return loop.time() - start
        if loop.time() - start > within:
            raise AssertionError(f"condition still false after {within} s")
        await asyncio.sleep(0.02)
