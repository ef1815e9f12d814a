"""What every streaming bridge shares: settings, the live-stream registry, the transport choice.

``install(app, settings)`` puts ``StreamSettings`` and a ``LiveStreams`` registry into the
application and hooks ``on_shutdown``: at shutdown every live stream is told to end (SSE and
NDJSON streams end, WebSockets get a final UNAVAILABLE status frame and close 1012) and the
hook waits for them, at most ``shutdown_grace`` seconds. Without ``install`` the bridges use the
default settings and nothing ends streams at shutdown.

A stream also ends when the token that admitted it expires (``token_seconds_left``, from the
``Access`` gateway/gate.py stored on the request; ``exp`` without leeway), whatever the backend
does: SSE with an ``event: error`` UNAUTHENTICATED "token expired", NDJSON with that error line,
WebSocket with that status frame and close 1008 (reconnect with a fresh token).

The handlers registered here pick the transport for a streaming call:

- server streaming: ``Upgrade: websocket`` → WebSocket; ``Accept: text/event-stream`` → SSE;
  anything else → NDJSON;
- client streaming: WebSocket, or a POST whose body is newline-delimited JSON requests;
- bidi streaming: WebSocket only (426 otherwise).

Invariants: an upstream call is cancelled on every way out of a bridge; a stream's end is
decided once (``StreamLife``), by the upstream, the client going away, a slow reader, the
token's expiry, or shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, cast

import grpc
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import status_pb2

from gateway.auth import TokenExpired
from gateway.bridges import CallContext, register, rpc_error_response, status_response
from gateway.config import StreamSettings
from gateway.gate import ACCESS, refusal
from gateway.metadata import response_headers
from gateway.routes import Cardinality
from gateway.transcode import status_from_parts

__all__ = [
    "LIVE_STREAMS",
    "STREAM_SETTINGS",
    "Ending",
    "LiveStreams",
    "ServerStream",
    "StreamFormat",
    "StreamLife",
    "StreamSettings",
    "bidi_call",
    "client_stream_call",
    "error_status",
    "install",
    "is_websocket",
    "server_stream_call",
    "stream_runtime",
    "token_seconds_left",
]

MiB: Final = 1024 * 1024
_DISCONNECT_POLL: Final = 0.2  # seconds; a vanished client is noticed well within one second
_TRANSPORT_HIGH_WATER: Final = 1 << 30


class Ending(enum.Enum):
    """Why the gateway ends a stream on its own."""

    SHUTDOWN = "the gateway is shutting down"
    CLIENT_GONE = "the client went away"
    SLOW_READER = "the client reads too slowly"
    TOKEN_EXPIRED = "token expired"  # also the status message the client gets


class StreamLife:
    """One live stream's end signal; the first reason given wins."""

    def __init__(self) -> None:
        self._ended = asyncio.Event()
        self.ending: Ending | None = None

    def end(self, why: Ending) -> None:
        if self.ending is None:
            self.ending = why
            self._ended.set()

    async def wait(self) -> Ending:
        await self._ended.wait()
        assert self.ending is not None
        return self.ending


class LiveStreams:
    """The streams in flight in one application."""

    def __init__(self) -> None:
        self._lives: set[StreamLife] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._lives)

    @contextlib.contextmanager
    def track(self, *, expires_in: float | None = None) -> Iterator[StreamLife]:
        """Register a stream for its duration; a stream opened during shutdown ends at once.

        ``expires_in``: seconds until the admitting token expires (None: never); then the stream
        ends with ``Ending.TOKEN_EXPIRED`` (at once when it is not positive).
        """
        life = StreamLife()
        if self.closing:
            life.end(Ending.SHUTDOWN)
        expiry = None
        if expires_in is not None:
            loop = asyncio.get_running_loop()
            expiry = loop.call_later(max(expires_in, 0.0), life.end, Ending.TOKEN_EXPIRED)
        self._lives.add(life)
        self._empty.clear()
        try:
            yield life
        finally:
            if expiry is not None:
                expiry.cancel()
            self._lives.discard(life)
            if not self._lives:
                self._empty.set()

    async def shutdown(self, grace: float) -> None:
        """End every stream and wait (at most ``grace`` s) until all have finished."""
        self.closing = True
        for life in list(self._lives):
            life.end(Ending.SHUTDOWN)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._empty.wait()


STREAM_SETTINGS: Final = web.AppKey("stream_settings", StreamSettings)
LIVE_STREAMS: Final = web.AppKey("live_streams", LiveStreams)
_DEFAULT_SETTINGS: Final = StreamSettings()


def install(app: web.Application, settings: StreamSettings = _DEFAULT_SETTINGS) -> None:
    """Give ``app`` stream settings, a live-stream registry and the shutdown hook."""
    app[STREAM_SETTINGS] = settings
    app[LIVE_STREAMS] = LiveStreams()
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    await app[LIVE_STREAMS].shutdown(app[STREAM_SETTINGS].shutdown_grace)


def stream_runtime(request: web.Request) -> tuple[StreamSettings, LiveStreams]:
    """The app's stream settings and registry (defaults and a private registry without them)."""
    settings = request.app.get(STREAM_SETTINGS, _DEFAULT_SETTINGS)
    live = request.app.get(LIVE_STREAMS)
    return settings, live if live is not None else LiveStreams()


async def watch_disconnect(request: web.Request, life: StreamLife) -> None:
    """End ``life`` when the client's connection closes (polled; aiohttp has no callback)."""
    while life.ending is None:
        transport = request.transport
        if transport is None or transport.is_closing():
            life.end(Ending.CLIENT_GONE)
            return
        await asyncio.sleep(_DISCONNECT_POLL)


def token_seconds_left(request: web.Request) -> float | None:
    """Seconds until the token that admitted ``request`` expires (None: no token or no exp)."""
    access = request.get(ACCESS)
    return None if access is None else access.seconds_left(time.time())


def is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


def wants_sse(request: web.Request) -> bool:
    return any(
        part.split(";")[0].strip().lower() == "text/event-stream"
        for part in request.headers.get("Accept", "").split(",")
    )


class StreamFormat(Protocol):
    """How one HTTP streaming format writes a call's messages (SSE, NDJSON)."""

    content_type: str
    headers: Mapping[str, str]

    def opening(self) -> bytes:
        """Bytes written right after the headers."""

    def message(self, message: Message) -> bytes:
        """One response message."""

    def error(self, status: status_pb2.Status) -> bytes:
        """The final error after the stream started."""

    def heartbeat(self) -> bytes | None:
        """Bytes that keep an idle stream alive, or None for none."""

    def ending(self, why: Ending) -> bytes | None:
        """The last bytes when the gateway ends the stream itself (None: just end)."""


class _Idle:
    """No upstream message within the heartbeat interval."""


IDLE: Final = _Idle()
Outcome = Message | _Idle | Ending | None  # None: the upstream finished (EOF)


class ServerStream:
    """Drives one server-streaming call onto one HTTP response in a StreamFormat.

    The first message (or the call's failure) is awaited up to one heartbeat before the headers
    go out, so an early failure gets its own HTTP status. After that, messages are written as
    they come; a failure becomes ``fmt.error``; the client going away, a slow reader, or shutdown
    end the response. The upstream call is cancelled on every way out.
    """

    def __init__(
        self,
        ctx: CallContext,
        call: grpc.aio.UnaryStreamCall[Message, Message],
        fmt: StreamFormat,
        life: StreamLife,
        settings: StreamSettings,
    ) -> None:
        self._ctx, self._call, self._fmt = ctx, call, fmt
        self._life, self._settings = life, settings
        self._read: asyncio.Future[object] | None = None
        self._ended = asyncio.ensure_future(life.wait())
        self._response = web.StreamResponse(
            headers={"Content-Type": fmt.content_type, **fmt.headers}
        )

    async def run(self) -> web.StreamResponse:
        watcher = asyncio.create_task(watch_disconnect(self._ctx.request, self._life))
        try:
            return await self._run()
        finally:
            watcher.cancel()
            self._ended.cancel()
            if self._read is not None:
                self._read.cancel()
            self._call.cancel()

    async def _run(self) -> web.StreamResponse:
        try:
            first = await self._next()
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc, send_trailers=self._ctx.send_trailers)
        if first is Ending.CLIENT_GONE:
            return status_response(grpc.StatusCode.CANCELLED, "the client went away")
        if first is Ending.TOKEN_EXPIRED:  # before the headers: a plain 401 (no reconnect loop)
            return refusal(TokenExpired())
        await self._start(echo_metadata=first is None or isinstance(first, Message))
        outcome: Outcome = first
        while await self._handle(outcome):
            try:
                outcome = await self._next()
            except grpc.aio.AioRpcError as exc:
                await self._write(self._fmt.error(error_status(exc)))
                break
        await self._finish()
        return self._response

    async def _finish(self) -> None:
        why = self._life.ending
        tail = self._fmt.ending(why) if why is not None else None
        if why is Ending.CLIENT_GONE:
            return
        with contextlib.suppress(ConnectionError):
            if tail:
                await self._response.write(tail)  # past the limit: one short line, then the end
            await self._response.write_eof()

    async def _start(self, *, echo_metadata: bool) -> None:
        """Send the headers (with the call's header metadata once it has arrived)."""
        if echo_metadata:
            with contextlib.suppress(grpc.aio.AioRpcError):
                echoed = response_headers(await self._call.initial_metadata() or ())
                for name, value in echoed.headers:
                    self._response.headers.add(name, value)
        self._response.force_close()
        await self._response.prepare(self._ctx.request)
        transport = self._ctx.request.transport
        if transport is not None:
            # The gateway enforces write_buffer_limit itself, so the transport never pauses
            # writes; the connection is not reused afterwards (force_close above).
            transport.set_write_buffer_limits(high=_TRANSPORT_HIGH_WATER)
        await self._write(self._fmt.opening())

    async def _handle(self, outcome: Outcome) -> bool:
        """Write what ``outcome`` calls for; False when the stream is over."""
        if isinstance(outcome, _Idle):
            beat = self._fmt.heartbeat()
            return beat is None or await self._write(beat)
        if isinstance(outcome, Ending):
            return False
        if outcome is None:
            return False
        return await self._write(self._fmt.message(outcome))

    async def _next(self) -> Outcome:
        if self._read is None:
            self._read = asyncio.ensure_future(self._call.read())
        waiting: set[asyncio.Future[Any]] = {self._read, self._ended}
        done, _ = await asyncio.wait(
            waiting,
            timeout=self._settings.heartbeat,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._ended in done:
            return self._ended.result()
        if self._read not in done:
            return IDLE
        read, self._read = self._read, None
        result = read.result()
        return result if isinstance(result, Message) else None  # anything else is grpc.aio.EOF

    async def _write(self, data: bytes) -> bool:
        """Write ``data`` unless the client is gone or too far behind; False then."""
        transport = self._ctx.request.transport
        if transport is None or transport.is_closing():
            self._life.end(Ending.CLIENT_GONE)
            return False
        if transport.get_write_buffer_size() > self._settings.write_buffer_limit:
            self._life.end(Ending.SLOW_READER)
            return False
        try:
            await self._response.write(data)
        except ConnectionError:
            self._life.end(Ending.CLIENT_GONE)
            return False
        return True


def server_stream_call(
    ctx: CallContext, request: Message
) -> grpc.aio.UnaryStreamCall[Message, Message]:
    """Start the route's server-streaming call with the context's metadata and deadline."""
    callable_ = ctx.multicallable
    assert isinstance(callable_, grpc.aio.UnaryStreamMultiCallable)
    return callable_(request, metadata=ctx.metadata, timeout=ctx.timeout)


def client_stream_call(ctx: CallContext) -> grpc.aio.StreamUnaryCall[Message, Message]:
    """Start the route's client-streaming call; requests go in with ``write``."""
    callable_ = ctx.multicallable
    assert isinstance(callable_, grpc.aio.StreamUnaryMultiCallable)
    return callable_(None, metadata=ctx.metadata, timeout=ctx.timeout)


def bidi_call(ctx: CallContext) -> grpc.aio.StreamStreamCall[Message, Message]:
    """Start the route's bidi-streaming call; requests go in with ``write``."""
    callable_ = ctx.multicallable
    assert isinstance(callable_, grpc.aio.StreamStreamMultiCallable)
    return callable_(None, metadata=ctx.metadata, timeout=ctx.timeout)


def error_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status of a failed upstream call, details included."""
    # grpc-stubs types these as _Metadatum objects; at run time they are (key, value) pairs.
    trailing = cast("Sequence[tuple[str, str | bytes]]", error.trailing_metadata())
    return status_from_parts(error.code(), error.details(), trailing)


async def _serve_server_streaming(ctx: CallContext) -> web.StreamResponse:
    from gateway.bridges import ndjson, sse
    from gateway.bridges.websocket import serve_websocket

    if is_websocket(ctx.request):
        return await serve_websocket(ctx)
    if wants_sse(ctx.request):
        return await sse.serve_sse(ctx)
    return await ndjson.serve_ndjson_stream(ctx)


async def _serve_client_streaming(ctx: CallContext) -> web.StreamResponse:
    from gateway.bridges import ndjson
    from gateway.bridges.websocket import serve_websocket

    if is_websocket(ctx.request):
        return await serve_websocket(ctx)
    return await ndjson.serve_ndjson_upload(ctx)


async def _serve_bidi_streaming(ctx: CallContext) -> web.StreamResponse:
    from gateway.bridges.websocket import serve_websocket

    if is_websocket(ctx.request):
        return await serve_websocket(ctx)
    return status_response(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{ctx.route.rpc_path} is bidirectional streaming: open a WebSocket "
        "(GET with Upgrade: websocket) on this path",
        http_status=426,
        headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
    )


register(Cardinality.SERVER_STREAMING, _serve_server_streaming)
register(Cardinality.CLIENT_STREAMING, _serve_client_streaming)
register(Cardinality.BIDI_STREAMING, _serve_bidi_streaming)
