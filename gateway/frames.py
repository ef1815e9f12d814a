"""The WebSocket frame protocol that carries one gRPC call (sans-IO).

Two subprotocols (``Sec-WebSocket-Protocol``):

- ``switchboard.grpc.json.v1`` — text frames, each one JSON object with exactly
  one key. Client: ``{"message": <request JSON>}`` or ``{"halfClose": true}``.
  Server: ``{"result": <response JSON>}`` or, last, ``{"status": <google.rpc.Status>}``.
  A handshake that offers no subprotocol gets this one (and none is echoed); one that offers
  only ``bearer, <token>`` (a token for the auth layer) gets it too, echoing ``bearer``.
- ``switchboard.grpc.proto.v1`` — binary frames: one type byte, then the payload.
  ``0x01`` message (serialized request or response), ``0x02`` half-close (client,
  empty payload), ``0x03`` status (server, serialized google.rpc.Status).

A call's session moves OPEN → HALF_CLOSED (client half-closed) → STATUS_SENT
(server sent its one final status) → CLOSED. ``Session`` holds that state
machine as a table: a client frame that breaks it raises ``FrameError`` (the
peer's fault, answered with INVALID_ARGUMENT); a server-side step that breaks
it raises ``LocalProtocolError`` (a bug in the bridge, loudly).

Close codes (``close_code``): OK → 1000; UNAUTHENTICATED, PERMISSION_DENIED →
1008; a message over the size limit → 1009; INTERNAL, UNKNOWN, DATA_LOSS →
1011; server shutdown → 1012; any other status → 4000 + its code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import orjson

__all__ = [
    "BEARER",
    "CLOSE_REASON_MAX_BYTES",
    "SUBPROTOCOLS",
    "CloseCause",
    "FrameError",
    "HalfClose",
    "LocalProtocolError",
    "MessageFrame",
    "Negotiated",
    "Session",
    "SessionEvent",
    "SessionState",
    "Subprotocol",
    "SubprotocolError",
    "close_code",
    "close_reason",
    "encode_message",
    "encode_status",
    "negotiate",
    "parse_client_frame",
]

CLOSE_REASON_MAX_BYTES: Final = 123  # RFC 6455 §5.5: control frame payload 125 minus the code


class Subprotocol(enum.Enum):
    """The frame encodings a client may pick in the WebSocket handshake."""

    JSON = "switchboard.grpc.json.v1"
    PROTO = "switchboard.grpc.proto.v1"


SUBPROTOCOLS: Final = tuple(p.value for p in Subprotocol)
BEARER: Final = "bearer"  # `Sec-WebSocket-Protocol: bearer, <token>` carries a token (auth)


class SubprotocolError(ValueError):
    """The client offered subprotocols, none of which this gateway speaks."""


class FrameError(ValueError):
    """A client frame that is malformed or arrives when the session forbids it."""


class LocalProtocolError(RuntimeError):
    """The server side tried a step its session state forbids (a bridge bug)."""


@dataclass(frozen=True)
class Negotiated:
    """The outcome of the handshake: the frame encoding and the protocol to echo (if any)."""

    frames: Subprotocol
    echo: str | None


def _without_credentials(offered: list[str]) -> tuple[list[str], bool]:
    """``offered`` minus ``bearer, <token>`` (the auth convention for browsers)."""
    if BEARER not in offered:
        return offered, False
    index = offered.index(BEARER)
    return offered[:index] + offered[index + 2 :], True


def negotiate(offered: list[str]) -> Negotiated:
    """The first offered subprotocol we speak; JSON when none but credentials was offered.

    ``bearer, <token>`` entries carry a token for the auth layer: they are never echoed or
    named in errors; when nothing else is offered the answer echoes ``bearer``.
    """
    protocols, bearer = _without_credentials(offered)
    if not protocols:
        return Negotiated(Subprotocol.JSON, BEARER if bearer else None)
    for name in protocols:
        for protocol in Subprotocol:
            if protocol.value == name:
                return Negotiated(protocol, protocol.value)
    raise SubprotocolError(
        f"unsupported WebSocket subprotocol(s) {', '.join(protocols)}; "
        f"supported: {', '.join(SUBPROTOCOLS)}"
    )


@dataclass(frozen=True)
class MessageFrame:
    """A request message: JSON bytes (JSON subprotocol) or serialized protobuf (PROTO)."""

    payload: bytes


@dataclass(frozen=True)
class HalfClose:
    """The client will send no more messages."""


ClientFrame = MessageFrame | HalfClose


class _FrameType(enum.IntEnum):
    MESSAGE = 0x01
    HALF_CLOSE = 0x02
    STATUS = 0x03


def parse_client_frame(protocol: Subprotocol, data: str | bytes) -> ClientFrame:
    """Decode one client frame; raises FrameError naming what is wrong."""
    if protocol is Subprotocol.PROTO:
        if isinstance(data, str):
            raise FrameError(f"subprotocol {protocol.value} takes binary frames, got text")
        return _parse_binary(data)
    if isinstance(data, bytes):
        raise FrameError(f"subprotocol {protocol.value} takes text frames, got binary")
    return _parse_json(data)


def _parse_binary(data: bytes) -> ClientFrame:
    if not data:
        raise FrameError("empty binary frame: the first byte must be the frame type")
    kind, payload = data[0], data[1:]
    if kind == _FrameType.MESSAGE:
        return MessageFrame(payload=payload)
    if kind == _FrameType.HALF_CLOSE and not payload:
        return HalfClose()
    if kind == _FrameType.HALF_CLOSE:
        raise FrameError("half-close frame (0x02) must carry no payload")
    raise FrameError(f"unknown client frame type 0x{kind:02x}; expected 0x01 or 0x02")


def _parse_json(text: str) -> ClientFrame:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise FrameError(f"frame is not valid JSON: {error}") from None
    if not isinstance(frame, dict) or len(frame) != 1:
        raise FrameError('frame must be an object with exactly one key, "message" or "halfClose"')
    ((key, value),) = frame.items()
    if key == "message" and isinstance(value, dict):
        return MessageFrame(payload=orjson.dumps(value))
    if key == "halfClose" and value is True:
        return HalfClose()
    raise FrameError(
        f'unknown frame key {key!r} or value: expected "message": {{…}} or "halfClose": true'
    )


def encode_message(protocol: Subprotocol, payload: bytes) -> str | bytes:
    """A response frame; ``payload`` is the message in the subprotocol's encoding."""
    if protocol is Subprotocol.PROTO:
        return bytes([_FrameType.MESSAGE]) + payload
    return (b'{"result":' + payload + b"}").decode()


def encode_status(protocol: Subprotocol, payload: bytes) -> str | bytes:
    """The final status frame; ``payload`` is google.rpc.Status JSON or serialized proto."""
    if protocol is Subprotocol.PROTO:
        return bytes([_FrameType.STATUS]) + payload
    return (b'{"status":' + payload + b"}").decode()


class SessionState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED = "half-closed"
    STATUS_SENT = "status-sent"
    CLOSED = "closed"


class SessionEvent(enum.Enum):
    RECEIVE_MESSAGE = "receive message"
    RECEIVE_HALF_CLOSE = "receive half-close"
    SEND_MESSAGE = "send message"
    SEND_STATUS = "send status"
    CLOSE = "close"


_S, _E = SessionState, SessionEvent
# (state, event) → next state. Client frames after the status are a benign race: ignored.
_TRANSITIONS: Final[dict[tuple[SessionState, SessionEvent], SessionState]] = {
    (_S.OPEN, _E.RECEIVE_MESSAGE): _S.OPEN,
    (_S.OPEN, _E.RECEIVE_HALF_CLOSE): _S.HALF_CLOSED,
    (_S.OPEN, _E.SEND_MESSAGE): _S.OPEN,
    (_S.OPEN, _E.SEND_STATUS): _S.STATUS_SENT,
    (_S.OPEN, _E.CLOSE): _S.CLOSED,
    (_S.HALF_CLOSED, _E.SEND_MESSAGE): _S.HALF_CLOSED,
    (_S.HALF_CLOSED, _E.SEND_STATUS): _S.STATUS_SENT,
    (_S.HALF_CLOSED, _E.CLOSE): _S.CLOSED,
    (_S.STATUS_SENT, _E.RECEIVE_MESSAGE): _S.STATUS_SENT,
    (_S.STATUS_SENT, _E.RECEIVE_HALF_CLOSE): _S.STATUS_SENT,
    (_S.STATUS_SENT, _E.CLOSE): _S.CLOSED,
}
_CLIENT_EVENTS: Final = frozenset({_E.RECEIVE_MESSAGE, _E.RECEIVE_HALF_CLOSE})


class Session:
    """The state of one call carried over one WebSocket."""

    def __init__(self) -> None:
        self.state = SessionState.OPEN

    def step(self, event: SessionEvent) -> SessionState:
        """Apply one event; raises FrameError (client's fault) or LocalProtocolError (ours)."""
        following = _TRANSITIONS.get((self.state, event))
        if following is None and event in _CLIENT_EVENTS:
            raise FrameError(f"client sent a frame ({event.value}) in state {self.state.value}")
        if following is None:
            raise LocalProtocolError(f"cannot {event.value} in state {self.state.value}")
        self.state = following
        return following

    def receive(self, frame: ClientFrame) -> SessionState:
        """Account for one client frame."""
        if isinstance(frame, HalfClose):
            return self.step(SessionEvent.RECEIVE_HALF_CLOSE)
        return self.step(SessionEvent.RECEIVE_MESSAGE)


class CloseCause(enum.Enum):
    """Why the server ends the socket, beyond the call's status code."""

    STATUS = "status"
    MESSAGE_TOO_BIG = "message too big"
    SHUTDOWN = "shutdown"


_OK, _UNKNOWN, _PERMISSION_DENIED, _INTERNAL, _DATA_LOSS, _UNAUTHENTICATED = 0, 2, 7, 13, 15, 16
_CLOSE_CODES: Final = {
    _OK: 1000,
    _UNAUTHENTICATED: 1008,
    _PERMISSION_DENIED: 1008,
    _UNKNOWN: 1011,
    _INTERNAL: 1011,
    _DATA_LOSS: 1011,
}


def close_code(status_code: int, cause: CloseCause = CloseCause.STATUS) -> int:
    """The WebSocket close code that ends a call with ``status_code`` (a grpc code number)."""
    if cause is CloseCause.SHUTDOWN:
        return 1012
    if cause is CloseCause.MESSAGE_TOO_BIG:
        return 1009
    return _CLOSE_CODES.get(status_code, 4000 + status_code)


def close_reason(message: str) -> str:
    """``message`` cut to fit a close frame (123 bytes of UTF-8, on a character boundary)."""
    encoded = message.encode()[:CLOSE_REASON_MAX_BYTES]
    return encoded.decode(errors="ignore")
