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

A client going away is noticed through aiohttp's handler cancellation (run the app with
``handler_cancellation=True``, as ``python -m gateway`` does): its handler is cancelled, which
cancels the upstream call. Without it, an SSE or NDJSON stream notices at its next write (a
message or a heartbeat). Nothing polls connections.

SSE and NDJSON server streams read the upstream's messages as raw bytes and share one
``FrameCache`` per route and format in the app (``stream_frames``), so a message fanned out to
many streams is parsed and encoded once.

Shared upstream streams (gateway/bridges/share.py): for a route with ``Route.share`` and
``StreamSettings.share`` on, ``raw_server_stream_call`` attaches the SSE or NDJSON stream to the
app's one Share call for its (backend, method, shared request) instead of opening a call of its
own; ``ServerStream`` reads it the same way. WebSocket server streams keep private calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar, cast

import grpc
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import status_pb2

from gateway.auth import TokenExpired
from gateway.bridges import CallContext, register, rpc_error_response, status_response
from gateway.bridges.framecache import FRAME_CACHES, FrameCache, FrameCaches, frame_cache
from gateway.bridges.share import StreamShares
from gateway.config import StreamSettings
from gateway.gate import ACCESS, refusal
from gateway.metadata import response_headers
from gateway.routes import Cardinality
from gateway.transcode import status_from_parts
from gateway.upstream import message_class

__all__ = [
    "LIVE_STREAMS",
    "STREAM_SETTINGS",
    "STREAM_SHARES",
    "Ending",
    "LiveStreams",
    "ServerStream",
    "StreamFormat",
    "StreamLife",
    "StreamSettings",
    "UpstreamStream",
    "bidi_call",
    "client_stream_call",
    "error_status",
    "install",
    "is_websocket",
    "raw_server_stream_call",
    "server_stream_call",
    "stream_frames",
    "stream_runtime",
    "token_seconds_left",
]

MiB: Final = 1024 * 1024
_TIMER_SLACK: Final = 0.001  # seconds; a heartbeat timer firing this early counts as on time
_TRANSPORT_HIGH_WATER: Final = 1 << 30


class Ending(enum.Enum):
    """Why the gateway ends a stream on its own."""

    SHUTDOWN = "the gateway is shutting down"
    CLIENT_GONE = "the client went away"
    SLOW_READER = "the client reads too slowly"
    TOKEN_EXPIRED = "token expired"  # also the status message the client gets


class StreamLife:
    """One live stream's end signal; the first reason given wins.

    ``on_end`` callbacks run synchronously inside ``end`` (once); ``wait`` is for tasks.
    """

    __slots__ = ("_ended", "_listeners", "ending")

    def __init__(self) -> None:
        self._ended: asyncio.Event | None = None  # made on the first wait: most streams never do
        self._listeners: list[Callable[[Ending], None]] = []
        self.ending: Ending | None = None

    def end(self, why: Ending) -> None:
        if self.ending is None:
            self.ending = why
            if self._ended is not None:
                self._ended.set()
            listeners, self._listeners = self._listeners, []
            for listener in listeners:
                listener(why)

    def on_end(self, listener: Callable[[Ending], None]) -> None:
        """Call ``listener(why)`` when the stream ends (at once when it has ended already)."""
        if self.ending is not None:
            listener(self.ending)
        else:
            self._listeners.append(listener)

    async def wait(self) -> Ending:
        if self.ending is None:
            if self._ended is None:
                self._ended = asyncio.Event()
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
STREAM_SHARES: Final = web.AppKey("stream_shares", StreamShares)
_DEFAULT_SETTINGS: Final = StreamSettings()


def install(app: web.Application, settings: StreamSettings = _DEFAULT_SETTINGS) -> None:
    """Give ``app`` stream settings, a live-stream registry, its shared upstream streams and
    the shutdown hook."""
    app[STREAM_SETTINGS] = settings
    app[LIVE_STREAMS] = LiveStreams()
    app[FRAME_CACHES] = FrameCaches()
    app[STREAM_SHARES] = StreamShares(settings)
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    await app[LIVE_STREAMS].shutdown(app[STREAM_SETTINGS].shutdown_grace)
    await app[STREAM_SHARES].close()


def stream_runtime(request: web.Request) -> tuple[StreamSettings, LiveStreams]:
    """The app's stream settings and registry (defaults and a private registry without them)."""
    settings = request.app.get(STREAM_SETTINGS, _DEFAULT_SETTINGS)
    live = request.app.get(LIVE_STREAMS)
    return settings, live if live is not None else LiveStreams()


def stream_frames(ctx: CallContext, kind: str) -> FrameCache:
    """The app's frame cache for ``kind`` frames of the route's responses, shared by its streams."""
    route = ctx.route
    return frame_cache(
        ctx.request.app, (kind, route.rpc_path, route.response_body, ctx.json_options)
    )


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


class UpstreamStream(Protocol):
    """What ServerStream reads: a grpc.aio server-streaming call of raw bytes, or a SharedCall."""

    async def read(self) -> object:
        """The next message's bytes, or grpc.aio.EOF; raises AioRpcError on failure."""

    def cancel(self) -> bool:
        """End the call (no-op once it has ended)."""

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """The call's header metadata."""


class _Idle:
    """No upstream message within the heartbeat interval."""


IDLE: Final = _Idle()
Outcome = bytes | _Idle | Ending | None  # bytes: one raw response message; None: EOF
_T = TypeVar("_T")


class ServerStream:
    """Drives one server-streaming call onto one HTTP response in a StreamFormat.

    The first message (or the call's failure) is awaited up to one heartbeat before the headers
    go out, so an early failure gets its own HTTP status. After that, messages are written as
    they come; a failure becomes ``fmt.error``; the client going away, a slow reader, the token's
    expiry or shutdown end the response. The upstream call is cancelled on every way out.

    Messages arrive as raw bytes; ``frames`` turns them into wire bytes (parsing and encoding
    only bytes it has not seen). One coroutine reads the call in a loop: no task or timer per
    message. When the stream's life ends while it waits for a message, the wait is cancelled
    (which cancels the call). Heartbeats come from one timer per stream that fires only when
    the stream has been silent for a whole interval.
    """

    def __init__(
        self,
        ctx: CallContext,
        call: UpstreamStream,
        fmt: StreamFormat,
        life: StreamLife,
        settings: StreamSettings,
        frames: FrameCache,
    ) -> None:
        self._ctx, self._call, self._fmt = ctx, call, fmt
        self._life, self._settings, self._frames = life, settings, frames
        self._decode = message_class(ctx.route.method.output_type).FromString
        self._task: asyncio.Task[Any] | None = None
        self._waiting = False  # parked on the upstream: an ending may interrupt
        self._interrupted = False
        self._pending: asyncio.Future[object] | None = None  # the first read, past one heartbeat
        self._beat: asyncio.TimerHandle | None = None
        self._beating: asyncio.Future[bool] | None = None
        self._last_write = 0.0
        self._response = web.StreamResponse(
            headers={"Content-Type": fmt.content_type, **fmt.headers}
        )

    async def run(self) -> web.StreamResponse:
        self._task = asyncio.current_task()
        self._life.on_end(self._interrupt)
        try:
            return await self._run()
        finally:
            self._stop_heartbeat()
            if self._pending is not None:
                self._pending.cancel()
            self._call.cancel()

    def _interrupt(self, why: Ending) -> None:
        if self._waiting and self._task is not None and not self._interrupted:
            self._interrupted = True
            self._task.cancel()

    async def _interruptible(self, wait: Callable[[], Awaitable[_T]]) -> _T | Ending:
        """``await wait()``, or the ending when the stream's life ends meanwhile."""
        if self._life.ending is not None:
            return self._life.ending
        self._waiting = True
        try:
            return await wait()
        except asyncio.CancelledError:
            task = self._task
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
            return _ending_of(self._life)  # interrupted: the life ended meanwhile
        finally:
            self._waiting = self._interrupted = False

    async def _run(self) -> web.StreamResponse:
        try:
            first = await self._interruptible(self._first)
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc, send_trailers=self._ctx.send_trailers)
        if first is Ending.CLIENT_GONE:
            return status_response(grpc.StatusCode.CANCELLED, "the client went away")
        if first is Ending.TOKEN_EXPIRED:  # before the headers: a plain 401 (no reconnect loop)
            return refusal(TokenExpired())
        await self._start(echo_metadata=first is None or isinstance(first, bytes))
        outcome: Outcome = first
        while await self._handle(outcome):
            try:
                outcome = await self._interruptible(self._next)
            except grpc.aio.AioRpcError as exc:
                await self._write(self._fmt.error(error_status(exc)))
                break
        self._stop_heartbeat()
        await self._finish()
        return self._response

    async def _first(self) -> Outcome:
        """The first message, EOF, or IDLE after one heartbeat (the read then stays pending)."""
        read = self._pending = asyncio.ensure_future(self._call.read())
        done, _ = await asyncio.wait({read}, timeout=self._settings.heartbeat)
        if not done:
            return IDLE  # read again later from self._pending
        self._pending = None
        return _raw(read.result())

    async def _next(self) -> bytes | None:
        pending, self._pending = self._pending, None
        return _raw(await (pending if pending is not None else self._call.read()))

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
        if self._fmt.heartbeat() is not None:
            loop = asyncio.get_running_loop()
            self._beat = loop.call_later(self._settings.heartbeat, self._heartbeat_due)

    def _heartbeat_due(self) -> None:
        """The heartbeat timer: write a heartbeat if nothing went out for an interval."""
        loop = asyncio.get_running_loop()
        interval = self._settings.heartbeat
        due = self._last_write + interval
        if loop.time() >= due - _TIMER_SLACK and (self._beating is None or self._beating.done()):
            beat = self._fmt.heartbeat()
            assert beat is not None
            self._beating = asyncio.ensure_future(self._write(beat))
            due = loop.time() + interval
        self._beat = loop.call_at(due, self._heartbeat_due)

    def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None

    async def _handle(self, outcome: Outcome) -> bool:
        """Write what ``outcome`` calls for; False when the stream is over."""
        if isinstance(outcome, bytes):
            return await self._write(self._frames.frame(outcome, self._render))
        if isinstance(outcome, _Idle):
            beat = self._fmt.heartbeat()
            return beat is None or await self._write(beat)
        return False  # an Ending, or EOF

    def _render(self, raw: bytes) -> bytes:
        return self._fmt.message(self._decode(raw))

    async def _write(self, data: bytes) -> bool:
        """Write ``data`` unless the client is gone or too far behind; False then."""
        transport = self._ctx.request.transport
        if transport is None or transport.is_closing():
            self._life.end(Ending.CLIENT_GONE)
            return False
        if transport.get_write_buffer_size() > self._settings.write_buffer_limit:
            self._life.end(Ending.SLOW_READER)
            return False
        self._last_write = asyncio.get_running_loop().time()
        try:
            await self._response.write(data)
        except ConnectionError:
            self._life.end(Ending.CLIENT_GONE)
            return False
        return True


def _ending_of(life: StreamLife) -> Ending:
    assert life.ending is not None
    return life.ending


def _raw(result: object) -> bytes | None:
    return result if isinstance(result, bytes) else None  # anything else is grpc.aio.EOF


def raw_server_stream_call(ctx: CallContext, request: Message) -> UpstreamStream:
    """Start the route's server-streaming call; responses arrive as undecoded bytes.

    A shareable route (sharing on) gets a SharedCall on the app's Share call for the request;
    any other a private call."""
    shares = ctx.request.app.get(STREAM_SHARES)
    if shares is not None and shares.serves(ctx.route):
        return shares.call(ctx, request, lambda: _private_raw_call(ctx, request))
    return _private_raw_call(ctx, request)


def _private_raw_call(
    ctx: CallContext, request: Message
) -> grpc.aio.UnaryStreamCall[Message, bytes]:
    callable_ = ctx.upstream.raw_unary_stream(ctx.route)
    return callable_(request, metadata=ctx.metadata, timeout=ctx.timeout)


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
