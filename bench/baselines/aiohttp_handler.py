"""The baseline a user writes instead of a gateway: a minimal hand-written aiohttp app.

Two routes, the ones the REST benchmark drives, each parsing JSON with
``google.protobuf.json_format`` and calling the generated stub:

- ``POST /v1/rooms/{room}/messages`` (body: a Message) → ChatService.PostMessage
- ``GET /v1/rooms/{room}`` → RoomService.GetRoom

Responses print with ``always_print_fields_with_no_presence=True`` so the body is the
same JSON the gateway sends by default (its JsonOptions emit unpopulated fields); the
comparison is then the same work. gRPC errors become ``{"code", "message"}`` with a
coarse HTTP status. Like the gateway (``python -m gateway``), it logs at INFO to stderr with
the same format, so aiohttp writes the same access-log line per request: without a logging
configuration aiohttp's access logger is disabled and the baseline would skip work the gateway
does. Run: ``python -m bench.baselines.aiohttp_handler --backend
HOST:PORT --listen HOST:PORT``; prints ``listening on http://HOST:PORT`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from switchboard.v1 import chat_pb2, chat_pb2_grpc, rooms_pb2, rooms_pb2_grpc

# the Async stub types exist only in the .pyi: annotations, never evaluated
CHAT: web.AppKey[chat_pb2_grpc.ChatServiceAsyncStub] = web.AppKey("chat")
ROOMS: web.AppKey[rooms_pb2_grpc.RoomServiceAsyncStub] = web.AppKey("rooms")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # gateway/__main__.py's
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _json(message: Message, status: int = 200) -> web.Response:
    text = json_format.MessageToJson(
        message, indent=None, always_print_fields_with_no_presence=True
    )
    return web.Response(text=text, status=status, content_type="application/json")


def _error(error: grpc.aio.AioRpcError) -> web.Response:
    body = json.dumps({"code": error.code().value[0], "message": error.details()})
    status = _HTTP_STATUS.get(error.code(), 500)
    return web.Response(text=body, status=status, content_type="application/json")


async def post_message(request: web.Request) -> web.Response:
    try:
        message = json_format.Parse(await request.text(), chat_pb2.Message())
    except json_format.ParseError as error:
        return web.json_response({"code": 3, "message": str(error)}, status=400)
    parent = f"rooms/{request.match_info['room']}"
    call = chat_pb2.PostMessageRequest(parent=parent, message=message)
    try:
        reply = await request.app[CHAT].PostMessage(call, timeout=30)
    except grpc.aio.AioRpcError as error:
        return _error(error)
    return _json(reply)


async def get_room(request: web.Request) -> web.Response:
    call = rooms_pb2.GetRoomRequest(name=f"rooms/{request.match_info['room']}")
    try:
        reply = await request.app[ROOMS].GetRoom(call, timeout=30)
    except grpc.aio.AioRpcError as error:
        return _error(error)
    return _json(reply)


def build_app(backend: str) -> web.Application:
    app = web.Application()

    async def channel_ctx(app: web.Application) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(backend)
        app[CHAT] = chat_pb2_grpc.ChatServiceStub(channel)
        app[ROOMS] = rooms_pb2_grpc.RoomServiceStub(channel)
        yield
        await channel.close(None)

    app.cleanup_ctx.append(channel_ctx)
    app.router.add_post("/v1/rooms/{room}/messages", post_message)
    app.router.add_get("/v1/rooms/{room}", get_room)
    return app


async def serve(backend: str, listen: str) -> None:
    host, port = listen.rsplit(":", 1)
    runner = web.AppRunner(build_app(backend))
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    for address in runner.addresses:
        print(f"listening on http://{address[0]}:{address[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.aiohttp_handler")
    parser.add_argument("--backend", required=True, help="gRPC service HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HTTP HOST:PORT (port 0: free)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    asyncio.run(serve(args.backend, args.listen))


if __name__ == "__main__":
    main()
