"""The SSE bridge: a server-streaming call as a ``text/event-stream`` response.

The request comes from the path, the query and (when the rule has one) the body, as for REST.
The resume cursor is the ``Last-Event-ID`` header, else the ``last_event_id`` query parameter
(which never reaches the transcoder unless the request has a field of that name); it is written
into the request field ``SseOptions.resume_field`` names. The response starts with ``retry:``,
then one event per message (``id``/``event`` per the method's SseOptions, data = the message's
JSON), a comment after every ``heartbeat`` idle seconds, and on an upstream failure a final
``event: error`` whose data is google.rpc.Status JSON. A failure before the first message gets
its own HTTP status instead (EventSource does not reconnect after a non-200 answer). At
shutdown the stream simply ends, so EventSource reconnects with its last id. When the admitting
token expires the stream ends with ``event: error`` UNAUTHENTICATED "token expired" (before the
first event: a 401); a reconnect with the same token is refused, so the client needs a new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

import grpc
from aiohttp import web
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from gateway.bridges import CallContext, status_response
from gateway.bridges.rest import (
    read_request,
)
from gateway.bridges.streaming import (
    Ending,
    ServerStream,
    raw_server_stream_call,
    stream_frames,
    stream_runtime,
    token_seconds_left,
)
from gateway.sse import (
    ResumeCursorError,
    SseMapping,
    encode_comment,
    encode_error,
    encode_event,
    encode_retry,
)
from gateway.transcode import JsonOptions, encode_message, status_to_json

__all__ = ["LAST_EVENT_ID_PARAMETER", "SseFormat", "serve_sse"]

LAST_EVENT_ID_PARAMETER: Final = "last_event_id"
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class SseFormat:
    """Messages as SSE events (see gateway.sse for the encoding)."""

    content_type = "text/event-stream"
    headers: Mapping[str, str] = _HEADERS

    def __init__(
        self, mapping: SseMapping, *, options: JsonOptions, response_body: str, retry_ms: int
    ) -> None:
        self._mapping, self._options = mapping, options
        self._response_body, self._retry_ms = response_body, retry_ms

    def opening(self) -> bytes:
        return encode_retry(self._retry_ms)

    def message(self, message: Message) -> bytes:
        data = encode_message(message, response_body=self._response_body, options=self._options)
        return encode_event(self._mapping.event(message, data))

    def error(self, status: status_pb2.Status) -> bytes:
        return encode_error(status_to_json(status))

    def heartbeat(self) -> bytes | None:
        return encode_comment("heartbeat")

    def ending(self, why: Ending) -> bytes | None:
        if why is Ending.TOKEN_EXPIRED:
            return self.error(status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=why.value))
        return None  # EventSource reconnects with its last id on its own


def resume_cursor(ctx: CallContext) -> str:
    """``Last-Event-ID`` when sent (and not empty), else the ``last_event_id`` parameter."""
    header = ctx.request.headers.get("Last-Event-ID", "")
    if header:
        return header
    return next((value for name, value in ctx.query if name == LAST_EVENT_ID_PARAMETER), "")


def _without_cursor_parameter(ctx: CallContext) -> CallContext:
    if LAST_EVENT_ID_PARAMETER in ctx.route.method.input_type.fields_by_name:
        return ctx
    query = tuple((name, value) for name, value in ctx.query if name != LAST_EVENT_ID_PARAMETER)
    return dataclasses.replace(ctx, query=query)


async def serve_sse(ctx: CallContext) -> web.StreamResponse:
    """Serve a server-streaming call as Server-Sent Events."""
    mapping = ctx.route.sse_mapping  # compiled and checked with the route table
    request = await read_request(_without_cursor_parameter(ctx))
    if isinstance(request, web.Response):
        return request
    try:
        cursor = resume_cursor(ctx)
        if cursor:
            mapping.apply_resume(request, cursor)
    except ResumeCursorError as exc:
        return status_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    settings, live = stream_runtime(ctx.request)
    fmt = SseFormat(
        mapping,
        options=ctx.json_options,
        response_body=ctx.route.response_body,
        retry_ms=settings.retry_ms,
    )
    frames = stream_frames(ctx, "sse")
    call = raw_server_stream_call(ctx, request)
    with live.track(expires_in=token_seconds_left(ctx.request)) as life:
        return await ServerStream(ctx, call, fmt, life, settings, frames).run()
