"""The REST bridge: one JSON request, one unary call, one JSON response.

Steps: read the body (bounded by ``max_body_bytes``, else 413), transcode bindings + query + body
into the request message, call the method with the context's metadata and deadline
(``Upstream.unary``: through the backend's UnaryTunnelService when it has one), and print
the response (or the rule's ``response_body`` field) as JSON; a google.api.HttpBody response is
written raw with its own content type.

The success status is 200 unless the response metadata carries ``x-http-code`` (a 2xx such as
201); a 204 has no body. Header metadata comes back as ``Grpc-Metadata-*`` headers, trailing
metadata as ``Grpc-Trailer-*`` when the client sent ``TE: trailers``. Failures are Status JSON:
transcoding errors with a google.rpc.BadRequest naming the field, upstream errors with the
details decoded from ``grpc-status-details-bin``.
"""

from __future__ import annotations

import grpc
from aiohttp import web
from google.protobuf.message import Message

from gateway.bridges import JSON, CallContext, register, rpc_error_response, status_response
from gateway.metadata import Metadata, response_headers
from gateway.routes import Cardinality
from gateway.transcode import (
    TranscodeError,
    build_request,
    encode_message,
    http_body_response,
    transcode_error_status,
)

__all__ = [
    "BodyTooLarge",
    "build_message",
    "read_body",
    "read_request",
    "serve_unary",
    "too_large_response",
    "transcode_error_response",
]

_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large_response(error: BodyTooLarge) -> web.Response:
    """413 with a Status body (RESOURCE_EXHAUSTED would map to 429, so the status is explicit)."""
    return status_response(grpc.StatusCode.INVALID_ARGUMENT, str(error), http_status=413)


def transcode_error_response(error: TranscodeError) -> web.Response:
    """400 (or 413/415) with a google.rpc.BadRequest naming the offending field."""
    status = transcode_error_status(error)
    return status_response(
        grpc.StatusCode.INVALID_ARGUMENT,
        status.message,
        list(status.details),
        http_status=error.http_status,
    )


async def build_message(ctx: CallContext) -> Message:
    """Read the body (when the rule takes one) and transcode the request message."""
    body = await read_body(ctx.request, ctx.settings.max_body_bytes)
    return build_request(
        ctx.route.method.input_type,
        path_bindings=ctx.bindings,
        query=ctx.query,
        body=body,
        body_field=ctx.route.body,
        content_type=ctx.request.headers.get("Content-Type", ""),
        http_method=ctx.request.method,
        options=ctx.json_options,
        query_options=ctx.query_options,
    )


async def read_request(ctx: CallContext) -> Message | web.Response:
    """The request message, or the response refusing it (413 too large, 400 malformed)."""
    try:
        return await build_message(ctx)
    except BodyTooLarge as exc:
        return too_large_response(exc)
    except TranscodeError as exc:
        return transcode_error_response(exc)


async def serve_unary(ctx: CallContext) -> web.StreamResponse:
    """The UNARY handler registered in ``gateway.bridges``."""
    request = await read_request(ctx)
    if isinstance(request, web.Response):
        return request
    try:
        reply = await ctx.upstream.unary(ctx.route, request, ctx.metadata, ctx.timeout)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc, send_trailers=ctx.send_trailers)
    return _reply_response(ctx, reply.response, reply.initial_metadata, reply.trailing_metadata)


def _reply_response(
    ctx: CallContext,
    reply: Message,
    initial: Metadata,
    trailing: Metadata,
) -> web.Response:
    echoed = response_headers(initial, trailing, send_trailers=ctx.send_trailers)
    status = echoed.http_code or 200
    raw = http_body_response(reply, response_body=ctx.route.response_body)
    if status == 204:
        response = web.Response(status=204)
    elif raw is not None:
        response = web.Response(status=status, body=raw.data)
        response.headers["Content-Type"] = raw.content_type
    else:
        body = encode_message(
            reply, response_body=ctx.route.response_body, options=ctx.json_options
        )
        response = web.Response(status=status, body=body, content_type=JSON)
    for name, value in echoed.headers:
        response.headers.add(name, value)
    return response


register(Cardinality.UNARY, serve_unary)
