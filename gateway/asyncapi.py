"""AsyncAPI 3.0 for the gateway's streaming surface (sans-IO).

The OpenAPI document describes request/response; this one describes what flows on a stream,
from the gateway's point of view (it *sends* SSE events and server frames, it *receives* client
frames). For each streaming route of the table:

- a server-streaming route gets an SSE channel (``<operationId>.sse``) with one message per
  event name (``gateway.openapi_streams.sse_events``) and a ``send`` operation;
- every streaming route gets a WebSocket channel (``<operationId>.ws``) with the client frames
  (``message``, ``halfClose``) received and the server frames (``result``, ``status``) sent.

Addresses and parameters are the OpenAPI document's paths and path parameters, operation ids
its operation ids, and schemas the same components (``gateway.openapi_schema``).

Invariant: rendering is deterministic and uses only the route table, like ``render_openapi``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gateway.comments import Comments
from gateway.frames import SUBPROTOCOLS
from gateway.httprule import RouteTable
from gateway.openapi import DocumentInfo, OperationPath, operation_ids, operation_path
from gateway.openapi_schema import Schema, SchemaRegistry
from gateway.openapi_streams import (
    CLOSE_CODES,
    client_frame_schema,
    server_frame_schema,
    sse_events,
)
from gateway.routes import Cardinality, Route
from gateway.transcode import JsonOptions

__all__ = ["ASYNCAPI_VERSION", "render_asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
_SECURITY = {"$ref": "#/components/securitySchemes/bearerAuth"}


def render_asyncapi(
    table: RouteTable[Route],
    *,
    json_options: JsonOptions | None = None,
    comments: Comments | None = None,
    info: DocumentInfo | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the streaming routes of ``table``."""
    info = info or DocumentInfo()
    registry = SchemaRegistry(
        json_options=json_options or JsonOptions(), comments=comments or Comments()
    )
    channels: Schema = {}
    operations: Schema = {}
    routes = [route for _, _, route in table.routes()]
    for route, operation_id in zip(routes, operation_ids(routes), strict=True):
        if route.cardinality is Cardinality.UNARY:
            continue
        where = operation_path(route, registry)
        if route.cardinality is Cardinality.SERVER_STREAMING:
            _add_sse(channels, operations, route, operation_id, where, registry)
        _add_websocket(channels, operations, route, operation_id, where, registry)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{info.title} (streams)",
            "version": info.version,
            "description": "The streaming surface of the gateway: Server-Sent Events and "
            "WebSocket frames, described from the gateway's side (it sends events and server "
            "frames, it receives client frames). Requests, paths and errors are in the OpenAPI "
            "document; operation ids match.",
        },
        "defaultContentType": "application/json",
        "servers": _servers(info),
        "channels": channels,
        "operations": operations,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        },
    }
    registry.finish(document)
    return document


def _servers(info: DocumentInfo) -> Schema:
    servers: Schema = {}
    for index, url in enumerate(info.servers or ("http://127.0.0.1:8080",)):
        parts = urlsplit(url)
        suffix = "" if index == 0 else f"{index + 1}"
        secure = parts.scheme == "https"
        servers[f"http{suffix}"] = {
            "host": parts.netloc,
            "protocol": parts.scheme or "http",
            "description": "Server-Sent Events over HTTP.",
            "security": [dict(_SECURITY)],
        }
        servers[f"ws{suffix}"] = {
            "host": parts.netloc,
            "protocol": "wss" if secure else "ws",
            "description": "WebSockets; subprotocols " + ", ".join(SUBPROTOCOLS) + ".",
            "security": [dict(_SECURITY)],
        }
    return servers


def _channel(where: OperationPath, description: str, server: str, messages: Schema) -> Schema:
    channel: Schema = {
        "address": where.path,
        "description": description,
        "servers": [{"$ref": f"#/servers/{server}"}],
        "messages": messages,
    }
    if where.parameters:
        channel["parameters"] = {name: {"description": text} for name, text in where.parameters}
    return channel


def _message(name: str, summary: str, payload: Schema) -> Schema:
    return {"name": name, "summary": summary, "contentType": "application/json", "payload": payload}


def _operation(action: str, channel: str, names: list[str], route: Route, summary: str) -> Schema:
    operation: Schema = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names],
        "summary": summary,
        "x-grpc-method": route.rpc_path,
    }
    if route.auth is not None and not route.auth.public:
        operation["x-required-permissions"] = sorted(route.auth.permissions)
    return operation


def _add_sse(
    channels: Schema,
    operations: Schema,
    route: Route,
    operation_id: str,
    where: OperationPath,
    registry: SchemaRegistry,
) -> None:
    channel_id = f"{operation_id}.sse"
    messages = {
        _message_key(event.name): _message(event.name, f"Sent when {event.when}.", event.data)
        for event in sse_events(route, registry)
    }
    description = (
        f"`GET {where.path}` with `Accept: text/event-stream`: one event per message of "
        f"{route.rpc_path}; the message key is the SSE `event:` name."
    )
    channels[channel_id] = _channel(where, description, "http", messages)
    operations[f"{operation_id}.events"] = _operation(
        "send", channel_id, list(messages), route, "The gateway sends the stream's events."
    )


def _message_key(event_name: str) -> str:
    return "anyName" if event_name == "*" else event_name


def _add_websocket(
    channels: Schema,
    operations: Schema,
    route: Route,
    operation_id: str,
    where: OperationPath,
    registry: SchemaRegistry,
) -> None:
    channel_id = f"{operation_id}.ws"
    client, server = client_frame_schema(route, registry), server_frame_schema(route, registry)
    messages = {
        "message": _message("message", "Client: one request message.", client["oneOf"][0]),
        "halfClose": _message("halfClose", "Client: no more messages.", client["oneOf"][1]),
        "result": _message("result", "Server: one response message.", server["oneOf"][0]),
        "status": _message(
            "status", "Server: the call's final status, then the close.", server["oneOf"][1]
        ),
    }
    codes = "; ".join(f"{code}: {text}" for code, text in CLOSE_CODES.items())
    description = (
        f"`GET {where.path}` with `Upgrade: websocket` carries {route.rpc_path} "
        f"({route.cardinality.value}). Close codes — {codes}"
    )
    channels[channel_id] = _channel(where, description, "ws", messages)
    operations[f"{operation_id}.clientFrames"] = _operation(
        "receive", channel_id, ["message", "halfClose"], route, "The client's frames."
    )
    operations[f"{operation_id}.serverFrames"] = _operation(
        "send", channel_id, ["result", "status"], route, "The gateway's frames."
    )
