"""The NDJSON bridges: newline-delimited JSON for server- and client-streaming calls.

Server streaming (any ``Accept`` but ``text/event-stream``): ``application/x-ndjson``, one
``{"result": <message>}`` line per message; a failure after the first message is a final
``{"error": <google.rpc.Status>}`` line, a failure before it the HTTP status and a plain Status
body. At shutdown the stream ends with an UNAVAILABLE error line; a reader that falls more than
``write_buffer_limit`` bytes behind gets a RESOURCE_EXHAUSTED error line and the end; when the
admitting token expires, an UNAUTHENTICATED "token expired" error line and the end.

Client streaming (POST, ``Content-Type: application/x-ndjson`` or ``application/json``): each
non-blank body line is one request message (at most ``max_body_bytes``), with the fields bound
from the path and query applied to every one; the answer is the one JSON response. A bad line
is answered 400 naming its line number; the upstream call is cancelled on every error. An
upload still running when the admitting token expires is cancelled and answered 401.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Final

import grpc
from aiohttp import StreamReader, web
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from gateway.auth import TokenExpired
from gateway.bridges import JSON, CallContext, rpc_error_response, status_response
from gateway.bridges.rest import (
    read_request,
    transcode_error_response,
)
from gateway.bridges.streaming import (
    Ending,
    ServerStream,
    client_stream_call,
    raw_server_stream_call,
    stream_frames,
    stream_runtime,
    token_seconds_left,
)
from gateway.gate import refusal
from gateway.transcode import (
    JsonOptions,
    TranscodeError,
    build_request,
    decode_json_message,
    encode_message,
    status_to_json,
)

__all__ = ["NDJSON", "NdjsonFormat", "bound_fields", "serve_ndjson_stream", "serve_ndjson_upload"]

NDJSON: Final = "application/x-ndjson"
_UPLOAD_TYPES: Final = frozenset({NDJSON, JSON, "application/jsonl"})
_CHUNK: Final = 64 * 1024
_ENDINGS: Final = {
    Ending.SHUTDOWN: (code_pb2.UNAVAILABLE, "the gateway is shutting down"),
    Ending.SLOW_READER: (code_pb2.RESOURCE_EXHAUSTED, "the client reads too slowly"),
    Ending.TOKEN_EXPIRED: (code_pb2.UNAUTHENTICATED, "token expired"),
}


class NdjsonFormat:
    """Messages as ``{"result": …}`` lines, the error as an ``{"error": …}`` line."""

    content_type = NDJSON
    headers: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

    def __init__(self, *, options: JsonOptions, response_body: str) -> None:
        self._options, self._response_body = options, response_body

    def opening(self) -> bytes:
        return b""

    def message(self, message: Message) -> bytes:
        data = encode_message(message, response_body=self._response_body, options=self._options)
        return b'{"result":' + data + b"}\n"

    def error(self, status: status_pb2.Status) -> bytes:
        return b'{"error":' + status_to_json(status) + b"}\n"

    def heartbeat(self) -> bytes | None:
        return None

    def ending(self, why: Ending) -> bytes | None:
        found = _ENDINGS.get(why)
        return self.error(status_pb2.Status(code=found[0], message=found[1])) if found else None


async def serve_ndjson_stream(ctx: CallContext) -> web.StreamResponse:
    """Serve a server-streaming call as NDJSON lines."""
    request = await read_request(ctx)
    if isinstance(request, web.Response):
        return request
    settings, live = stream_runtime(ctx.request)
    fmt = NdjsonFormat(options=ctx.json_options, response_body=ctx.route.response_body)
    frames = stream_frames(ctx, "ndjson")
    call = raw_server_stream_call(ctx, request)
    with live.track(expires_in=token_seconds_left(ctx.request)) as life:
        return await ServerStream(ctx, call, fmt, life, settings, frames).run()


def bound_fields(ctx: CallContext) -> Message:
    """A request message holding only the fields bound from the path and the query."""
    return build_request(
        ctx.route.method.input_type,
        path_bindings=ctx.bindings,
        query=ctx.query,
        body=None,
        body_field="",
        content_type="",
        http_method="GET",
        options=ctx.json_options,
        query_options=ctx.query_options,
    )


class _LineTooLong(Exception):
    pass


async def _lines(content: StreamReader, limit: int) -> AsyncIterator[tuple[int, bytes]]:
    """Numbered non-blank lines of a body; ``_LineTooLong`` past ``limit`` bytes."""
    pending, number = b"", 0
    async for chunk in content.iter_chunked(_CHUNK):
        *complete, pending = (pending + chunk).split(b"\n")
        if len(pending) > limit:
            raise _LineTooLong(number + len(complete) + 1)
        for line in complete:
            number += 1
            if len(line) > limit:
                raise _LineTooLong(number)
            if line.strip():
                yield number, line
    if pending.strip():
        yield number + 1, pending


async def serve_ndjson_upload(ctx: CallContext) -> web.StreamResponse:
    """Serve a client-streaming call from a POST body of NDJSON request messages."""
    kind = ctx.request.content_type
    if kind not in _UPLOAD_TYPES:
        return status_response(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{ctx.route.rpc_path} takes a body of newline-delimited JSON messages "
            f"(Content-Type: {NDJSON}), not {kind!r}",
            http_status=415,
        )
    try:
        bound = bound_fields(ctx)
    except TranscodeError as exc:
        return transcode_error_response(exc)
    call = client_stream_call(ctx)
    expiry = asyncio.timeout(token_seconds_left(ctx.request))
    try:
        async with expiry:
            return await _upload(ctx, call, bound)
    except ConnectionError:
        return status_response(grpc.StatusCode.CANCELLED, "the client went away mid-body")
    except TimeoutError:
        if not expiry.expired():
            raise
        return refusal(TokenExpired())
    finally:
        call.cancel()


async def _upload(
    ctx: CallContext, call: grpc.aio.StreamUnaryCall[Message, Message], bound: Message
) -> web.StreamResponse:
    descriptor = ctx.route.method.input_type
    limit = ctx.settings.max_body_bytes
    try:
        async for number, line in _lines(ctx.request.content, limit):
            message = _line_message(descriptor, number, line, ctx.json_options)
            message.MergeFrom(bound)
            try:
                await call.write(message)
            except asyncio.InvalidStateError:
                break  # the call already finished; its outcome is the answer
        else:
            await call.done_writing()
        reply = await call
    except _LineTooLong as exc:
        return status_response(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"line {exc.args[0]} of the body exceeds the limit of {limit} bytes",
            http_status=413,
        )
    except TranscodeError as exc:
        return transcode_error_response(exc)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc, send_trailers=ctx.send_trailers)
    body = encode_message(reply, response_body=ctx.route.response_body, options=ctx.json_options)
    return web.Response(body=body, content_type=JSON)


def _line_message(
    descriptor: Descriptor, number: int, line: bytes, options: JsonOptions
) -> Message:
    try:
        return decode_json_message(descriptor, line, options)
    except TranscodeError as exc:
        raise TranscodeError(
            f"line {number}: {exc.message}", field=exc.field, http_status=exc.http_status
        ) from exc
