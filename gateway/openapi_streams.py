"""How a streaming route looks on the wire: SSE events and WebSocket frames, as schemas.

Shared by the OpenAPI document (the ``x-sse`` and ``x-websocket`` extensions) and the AsyncAPI
document, so both describe the same events and frames:

- SSE (``gateway.sse``): every response message is one event whose data is the message's JSON
  (or its ``response_body`` field). The event name is the set member of the oneof that
  ``SseOptions.event_field`` names (its proto field name), the value of a scalar/enum field, or
  ``default_event`` ("message"). The ``id`` is ``SseOptions.id_field``. A failure after the
  first event ends the stream with ``event: error`` whose data is a google.rpc.Status.
- WebSocket (``gateway.frames``): subprotocol ``switchboard.grpc.json.v1`` sends text frames
  with one key — client ``{"message": …}`` / ``{"halfClose": true}``, server ``{"result": …}``
  then one final ``{"status": …}``; ``switchboard.grpc.proto.v1`` sends binary frames, a type
  byte then protobuf bytes. The close code follows the final status.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import status_pb2

from gateway.frames import SUBPROTOCOLS, Subprotocol
from gateway.openapi_schema import Schema, SchemaRegistry
from gateway.routes import Route
from gateway.sse import DEFAULT_EVENT

__all__ = [
    "CLOSE_CODES",
    "ERROR_EVENT",
    "PROTO_FRAME_TYPES",
    "SseEventDoc",
    "client_frame_schema",
    "server_frame_schema",
    "sse_events",
    "sse_extension",
    "websocket_extension",
]

ERROR_EVENT = "error"
CLOSE_CODES = {
    "1000": "The call ended with OK.",
    "1008": "UNAUTHENTICATED or PERMISSION_DENIED.",
    "1009": "A message exceeded the size limit.",
    "1011": "INTERNAL, UNKNOWN or DATA_LOSS.",
    "1012": "The gateway is shutting down.",
    "4000+code": "Any other status: 4000 plus the gRPC code (4005 NOT_FOUND, ...).",
}
PROTO_FRAME_TYPES = {
    "0x01": "message: a serialized request (client) or response (server)",
    "0x02": "half-close (client, empty payload)",
    "0x03": "status: a serialized google.rpc.Status (server, last frame)",
}


@dataclass(frozen=True)
class SseEventDoc:
    """One event name a stream can carry, when it is sent, and its data schema."""

    name: str
    when: str
    data: Schema

    def as_json(self) -> Schema:
        return {"name": self.name, "when": self.when, "data": self.data}


def _data_schema(route: Route, registry: SchemaRegistry) -> Schema:
    output = route.method.output_type
    if route.response_body:
        return registry.field(output.fields_by_name[route.response_body])
    return registry.message(output)


def _event_source(message: Descriptor, path: str) -> tuple[list[str], str] | None:
    """(oneof member names, "") for a oneof, ([], description) for a scalar, None if unknown."""
    *parents, last = path.split(".")
    current: Descriptor | None = message
    for name in parents:
        parent = current.fields_by_name.get(name) if current is not None else None
        current = parent.message_type if parent is not None else None
    if current is None:
        return None
    if last in current.oneofs_by_name:
        return [member.name for member in current.oneofs_by_name[last].fields], ""
    field = current.fields_by_name.get(last)
    if field is None:
        return None
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return [value.name for value in field.enum_type.values], ""
    return [], f"the value of `{path}`"


def sse_events(route: Route, registry: SchemaRegistry) -> list[SseEventDoc]:
    """Every event name the route's stream can carry, the final ``error`` event last."""
    options = route.sse
    data = _data_schema(route, registry)
    default = (options.default_event if options else "") or DEFAULT_EVENT
    events: list[SseEventDoc] = []
    source = _event_source(route.method.output_type, options.event_field) if options else None
    if options and options.event_field and source is not None:
        names, scalar = source
        for name in names:
            events.append(SseEventDoc(name, f"`{options.event_field}` is `{name}`", dict(data)))
        if scalar:
            events.append(SseEventDoc("*", f"named by {scalar}", dict(data)))
    events.append(SseEventDoc(default, "no other event name applies", dict(data)))
    status = registry.message(status_pb2.Status.DESCRIPTOR)
    events.append(SseEventDoc(ERROR_EVENT, "the call failed after the first event; last", status))
    return events


def sse_extension(route: Route, registry: SchemaRegistry) -> Schema:
    """``x-sse``: the route's SseOptions and its events."""
    options = route.sse
    assert options is not None
    return {
        "idField": options.id_field,
        "eventField": options.event_field,
        "defaultEvent": options.default_event or DEFAULT_EVENT,
        "resumeField": options.resume_field,
        "events": [event.as_json() for event in sse_events(route, registry)],
    }


def _one_key(key: str, schema: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {key: schema},
        "required": [key],
        "additionalProperties": False,
    }


def client_frame_schema(route: Route, registry: SchemaRegistry) -> Schema:
    """A client text frame of the JSON subprotocol: a request message or the half-close."""
    return {
        "oneOf": [
            _one_key("message", registry.message(route.method.input_type)),
            _one_key("halfClose", {"const": True}),
        ]
    }


def server_frame_schema(route: Route, registry: SchemaRegistry) -> Schema:
    """A server text frame of the JSON subprotocol: a response message or the final status."""
    return {
        "oneOf": [
            _one_key("result", _data_schema(route, registry)),
            _one_key("status", registry.message(status_pb2.Status.DESCRIPTOR)),
        ]
    }


def websocket_extension(route: Route, registry: SchemaRegistry) -> Schema:
    """``x-websocket``: how to carry the call over a WebSocket on the operation's path."""
    return {
        "description": "Open with a GET and `Upgrade: websocket` on this path; the path and "
        "query fields are applied to every request message. A browser, which cannot send "
        "`Authorization`, offers the subprotocols `bearer`, `<token>` next to one of "
        "`subprotocols`. Text frames of the JSON subprotocol follow `clientFrame` / "
        "`serverFrame` (a server-streaming call takes one message); the server's last frame "
        "is the call's status, then it closes with a code from `closeCodes`.",
        "subprotocols": list(SUBPROTOCOLS),
        "defaultSubprotocol": Subprotocol.JSON.value,
        "clientFrame": client_frame_schema(route, registry),
        "serverFrame": server_frame_schema(route, registry),
        "binaryFrameTypes": dict(PROTO_FRAME_TYPES),
        "closeCodes": dict(CLOSE_CODES),
    }
