"""The WebSocket bridge: one streaming call (client, bidi or server streaming) per socket.

Before the upgrade: a browser ``Origin`` must be allowed (``StreamSettings.allowed_origins``
plus the CORS origins; "*" allows any; with neither, only the gateway's own host) else 403; the
offered subprotocols must include one of ``gateway.frames.SUBPROTOCOLS`` (none offered, or
only the auth layer's ``bearer, <token>``, means JSON) else 400; the path and query must
transcode (they are applied to every request message) else 400. Every refusal is a
google.rpc.Status JSON body.

After it, frames follow ``gateway.frames``: client message frames become upstream writes, the
client's half-close becomes ``done_writing()``, upstream messages become result frames, and the
call's outcome becomes one final status frame, then the close code ``frames.close_code`` maps it
to. A server-streaming call starts with the client's first message (one only). A message over
``websocket_max_message`` bytes (after permessage-deflate) gets a RESOURCE_EXHAUSTED status
frame and 1009; shutdown gets UNAVAILABLE and 1012; the expiry of the token that admitted the
socket gets UNAUTHENTICATED "token expired" and 1008 (reconnect with a fresh token); the client
closing the socket cancels the call. aiohttp pings every ``websocket_heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import grpc
from aiohttp import WSCloseCode, WSMsgType, web
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2

from gateway.bridges import CallContext, status_response
from gateway.bridges.ndjson import bound_fields
from gateway.bridges.rest import transcode_error_response
from gateway.bridges.streaming import (
    Ending,
    StreamLife,
    StreamSettings,
    bidi_call,
    client_stream_call,
    error_status,
    server_stream_call,
    stream_runtime,
    token_seconds_left,
)
from gateway.frames import (
    CloseCause,
    FrameError,
    HalfClose,
    MessageFrame,
    Session,
    SessionEvent,
    SessionState,
    Subprotocol,
    SubprotocolError,
    close_code,
    close_reason,
    encode_message,
    encode_status,
    negotiate,
    parse_client_frame,
)
from gateway.routes import Cardinality
from gateway.transcode import TranscodeError, decode_json_message, status_to_json
from gateway.transcode import encode_message as encode_json
from gateway.upstream import message_class

__all__ = ["origin_allowed", "serve_websocket"]

_CLOSE_TIMEOUT: Final = 5.0  # seconds to wait for the client's close frame
_SHUTDOWN_CLOSE_WAIT: Final = 0.1
_STATUS_FOR_CLOSE: Final[dict[int, int]] = {
    WSCloseCode.MESSAGE_TOO_BIG: code_pb2.RESOURCE_EXHAUSTED,
    WSCloseCode.PROTOCOL_ERROR: code_pb2.INVALID_ARGUMENT,
    WSCloseCode.INVALID_TEXT: code_pb2.INVALID_ARGUMENT,
    WSCloseCode.UNSUPPORTED_DATA: code_pb2.INVALID_ARGUMENT,
}
Call = (
    grpc.aio.StreamStreamCall[Message, Message]
    | grpc.aio.StreamUnaryCall[Message, Message]
    | grpc.aio.UnaryStreamCall[Message, Message]
)


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """No Origin (not a browser), an allowed one, "*", or the gateway's own host."""
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return not allowed and urlsplit(origin).netloc.lower() == request.host.lower()


def _offered(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [name.strip() for name in header.split(",") if name.strip()]


async def serve_websocket(ctx: CallContext) -> web.StreamResponse:
    """Check the handshake, upgrade, and carry the route's call over the socket."""
    settings, live = stream_runtime(ctx.request)
    allowed = (*settings.allowed_origins, *ctx.settings.cors_origins)
    if not origin_allowed(ctx.request, allowed):
        origin = ctx.request.headers.get("Origin")
        return status_response(
            grpc.StatusCode.PERMISSION_DENIED, f"WebSocket Origin {origin!r} is not allowed"
        )
    try:
        negotiated = negotiate(_offered(ctx.request))
        bound = bound_fields(ctx)
    except SubprotocolError as exc:
        return status_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except TranscodeError as exc:
        return transcode_error_response(exc)
    socket = _CallSocket(
        protocols=(negotiated.echo,) if negotiated.echo else (),
        heartbeat=settings.websocket_heartbeat,
        max_msg_size=settings.websocket_max_message,
        timeout=_CLOSE_TIMEOUT,
    )
    if not socket.can_prepare(ctx.request).ok:
        return status_response(grpc.StatusCode.INVALID_ARGUMENT, "not a WebSocket handshake")
    await socket.prepare(ctx.request)
    with live.track(expires_in=token_seconds_left(ctx.request)) as life:
        await _SocketCall(ctx, socket, negotiated.frames, bound, settings).run(life)
    return socket


def _ending_status(why: Ending) -> tuple[status_pb2.Status, CloseCause]:
    """The status frame and close cause when the gateway ends the socket itself."""
    if why is Ending.TOKEN_EXPIRED:  # close 1008: reconnect with a fresh token
        return status_pb2.Status(
            code=code_pb2.UNAUTHENTICATED, message=why.value
        ), CloseCause.STATUS
    return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=why.value), CloseCause.SHUTDOWN


class _CallSocket(web.WebSocketResponse):
    """Sends the final status frame before aiohttp closes for a frame it refused itself."""

    before_protocol_close: Callable[[int], Awaitable[None]] | None = None

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        hook, self.before_protocol_close = self.before_protocol_close, None
        if hook is not None and code != WSCloseCode.OK and not self.closed:
            await hook(code)
        return await super().close(code=code, message=message, drain=drain)


class _SocketCall:
    """One call over one socket: a receive task, a send task, and the end signal."""

    def __init__(
        self,
        ctx: CallContext,
        socket: _CallSocket,
        protocol: Subprotocol,
        bound: Message,
        settings: StreamSettings,
    ) -> None:
        self._ctx, self._socket, self._protocol = ctx, socket, protocol
        self._bound, self._settings = bound, settings
        self._session = Session()
        self._send_lock = asyncio.Lock()
        self._call: Call | None = None
        self._started = asyncio.Event()
        cardinality = ctx.route.cardinality
        if cardinality is Cardinality.BIDI_STREAMING:
            self._start(bidi_call(ctx))
        elif cardinality is Cardinality.CLIENT_STREAMING:
            self._start(client_stream_call(ctx))
        socket.before_protocol_close = self._refused_by_socket

    def _start(self, call: Call) -> None:
        self._call = call
        self._started.set()

    async def run(self, life: StreamLife) -> None:
        tasks = {
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._outcome()),
            asyncio.create_task(life.wait()),
        }
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._finish(next(iter(done)).result())
        finally:
            for task in tasks:
                task.cancel()
            if self._call is not None:
                self._call.cancel()

    async def _finish(self, result: status_pb2.Status | Ending | None) -> None:
        """End the socket: ``result`` is the status to report, shutdown, or None (peer gone)."""
        if result is None:
            await self._close(WSCloseCode.OK)
            return
        cause = CloseCause.STATUS
        if isinstance(result, Ending):
            result, cause = _ending_status(result)
        await self._send_status(result)
        code = close_code(result.code, cause)
        if cause is CloseCause.SHUTDOWN:
            # aiohttp ignores incoming data once shutdown began: the client's close reply
            # cannot arrive, so close the connection right after our close frame.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SHUTDOWN_CLOSE_WAIT):
                    await self._close(code, close_reason(result.message))
            return
        await self._close(code, close_reason(result.message))

    async def _close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(ConnectionError):
            await self._socket.close(code=code, message=reason.encode())
        if self._session.state is not SessionState.CLOSED:
            self._session.step(SessionEvent.CLOSE)

    # --- client → upstream ----------------------------------------------------------------

    async def _receive(self) -> status_pb2.Status | None:
        """Feed client frames upstream; a Status when the client broke the protocol."""
        while True:
            received = await self._socket.receive()
            if received.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return None  # closed by the peer, or refused by aiohttp (status already sent)
            try:
                await self._take(parse_client_frame(self._protocol, received.data))
            except FrameError as exc:
                return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc))

    async def _take(self, frame: MessageFrame | HalfClose) -> None:
        if self._session.receive(frame) is SessionState.STATUS_SENT:
            return
        if isinstance(frame, HalfClose):
            await self._half_close()
            return
        message = self._decode(frame.payload)
        if self._call is None:
            self._start(server_stream_call(self._ctx, message))
            return
        if isinstance(self._call, grpc.aio.UnaryStreamCall):
            raise FrameError("a server-streaming call takes exactly one request message")
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.write(message)  # a finished call reports through _outcome

    async def _half_close(self) -> None:
        if self._call is None:
            raise FrameError("half-close before the request message of a server-streaming call")
        if not isinstance(self._call, grpc.aio.UnaryStreamCall):
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await self._call.done_writing()

    def _decode(self, payload: bytes) -> Message:
        descriptor = self._ctx.route.method.input_type
        try:
            if self._protocol is Subprotocol.PROTO:
                message = message_class(descriptor).FromString(payload)
            else:
                message = decode_json_message(descriptor, payload, self._ctx.json_options)
        except (DecodeError, TranscodeError) as exc:
            raise FrameError(
                f"request message is not a valid {descriptor.full_name}: {exc}"
            ) from exc
        message.MergeFrom(self._bound)
        return message

    # --- upstream → client ----------------------------------------------------------------

    async def _outcome(self) -> status_pb2.Status:
        """Relay the call's responses; its final status."""
        await self._started.wait()
        call = self._call
        assert call is not None
        try:
            if isinstance(call, grpc.aio.StreamUnaryCall):
                await self._send_message(await call)
            else:
                while isinstance(response := await call.read(), Message):
                    await self._send_message(response)
            code = await call.code()
            return status_pb2.Status(code=code.value[0], message=await call.details() or "")
        except grpc.aio.AioRpcError as exc:
            return error_status(exc)

    async def _send_message(self, message: Message) -> None:
        if self._protocol is Subprotocol.PROTO:
            payload = message.SerializeToString()
        else:
            route, options = self._ctx.route, self._ctx.json_options
            payload = encode_json(message, response_body=route.response_body, options=options)
        await self._send(SessionEvent.SEND_MESSAGE, encode_message(self._protocol, payload))

    async def _send_status(self, status: status_pb2.Status) -> None:
        if self._session.state not in (SessionState.OPEN, SessionState.HALF_CLOSED):
            return  # already reported (a frame aiohttp refused), or closed
        if self._protocol is Subprotocol.PROTO:
            payload = status.SerializeToString()
        else:
            payload = status_to_json(status)
        await self._send(SessionEvent.SEND_STATUS, encode_status(self._protocol, payload))

    async def _send(self, event: SessionEvent, frame: str | bytes) -> None:
        async with self._send_lock:
            self._session.step(event)
            with contextlib.suppress(ConnectionError):
                if isinstance(frame, bytes):
                    await self._socket.send_bytes(frame)
                else:
                    await self._socket.send_str(frame)

    async def _refused_by_socket(self, code: int) -> None:
        """aiohttp refused a frame (too big, bad UTF-8…) and closes with ``code``: report it."""
        status_code = _STATUS_FOR_CLOSE.get(code, code_pb2.INVALID_ARGUMENT)
        message = f"WebSocket frame refused (close code {code})"
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            message = f"message exceeds the limit of {self._settings.websocket_max_message} bytes"
        await self._send_status(status_pb2.Status(code=status_code, message=message))
