"""Server-Sent Events encoding and the SseOptions mapping (sans-IO).

The encoder turns events into wire bytes per the WHATWG ``text/event-stream``
format; the mapping reads an event's ``id`` and name out of a response message
as the method's ``switchboard.gateway.v1.SseOptions`` direct.

Invariants:

- Nothing a field value holds can add a line to the stream: ``id`` and
  ``event`` values containing CR, LF or NUL are refused by ``encode_event``
  (``SseFieldError``); the mapping never hands it such a value (event names are
  stripped of them, an id holding one is left out, since a mangled cursor would
  resume at the wrong place). Data is split on line breaks into several
  ``data:`` lines, which a parser joins back with LF, so data cannot inject
  fields either (JSON data holds no raw line breaks anyway).
- Every block ends with an empty line; every field line is ``name: value`` so
  a value starting with a space survives the parser's one-space strip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from switchboard.gateway.v1 import options_pb2

__all__ = [
    "DEFAULT_EVENT",
    "ResumeCursorError",
    "SseEvent",
    "SseFieldError",
    "SseMapping",
    "SseOptionsError",
    "encode_comment",
    "encode_error",
    "encode_event",
    "encode_retry",
]

DEFAULT_EVENT = "message"
ERROR_EVENT = "error"
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class SseFieldError(ValueError):
    """An ``id`` or ``event`` value holds CR, LF or NUL; it would corrupt the stream."""


class ResumeCursorError(ValueError):
    """A ``Last-Event-ID`` value that the method's resume field cannot hold."""


class SseOptionsError(ValueError):
    """A method's SseOptions names a field its request or response does not have."""


@dataclass(frozen=True)
class SseEvent:
    """One event: ``data`` is one JSON document (bytes), ``id`` is optional."""

    data: bytes
    event: str = DEFAULT_EVENT
    id: str | None = None


def _check_field(name: str, value: str) -> None:
    if _FORBIDDEN.search(value):
        raise SseFieldError(f"SSE {name} {value!r} contains CR, LF or NUL")


def encode_event(event: SseEvent) -> bytes:
    """The wire bytes of one event, ending with the blank line that dispatches it."""
    lines: list[bytes] = []
    if event.id is not None:
        _check_field("id", event.id)
        lines.append(b"id: " + event.id.encode())
    _check_field("event", event.event)
    if event.event != DEFAULT_EVENT:
        lines.append(b"event: " + event.event.encode())
    lines.extend(b"data: " + line for line in _LINE_BREAK.split(event.data))
    return b"\n".join(lines) + b"\n\n"


def encode_retry(milliseconds: int) -> bytes:
    """A ``retry:`` hint: how long EventSource waits before reconnecting."""
    if milliseconds < 0:
        raise ValueError(f"SSE retry must be >= 0 ms, got {milliseconds}")
    return b"retry: %d\n\n" % milliseconds


def encode_comment(text: str = "") -> bytes:
    """A comment line (heartbeat); line breaks in ``text`` are replaced by spaces."""
    return b": " + _FORBIDDEN.sub(" ", text).encode() + b"\n\n"


def encode_error(status_json: bytes) -> bytes:
    """The final ``event: error`` whose data is a google.rpc.Status JSON document."""
    return encode_event(SseEvent(data=status_json, event=ERROR_EVENT))


def _resolve(descriptor: Descriptor, path: str, option: str) -> tuple[FieldDescriptor, ...]:
    """The fields along a dotted path; every step but the last must be a message."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in path.split("."):
        field = current.fields_by_name.get(name) if current is not None else None
        if field is None:
            raise SseOptionsError(f"SseOptions.{option} {path!r}: no field {name!r} in the path")
        fields.append(field)
        current = field.message_type
    if fields[-1].message_type is not None or fields[-1].is_repeated:
        raise SseOptionsError(f"SseOptions.{option} {path!r} must name a singular scalar field")
    return tuple(fields)


def _scalar_text(message: Message, fields: tuple[FieldDescriptor, ...]) -> str:
    """The scalar at the end of the path as text; "" when a message on the way is unset."""
    current = message
    for field in fields[:-1]:
        if not current.HasField(field.name):
            return ""
        current = getattr(current, field.name)
    last = fields[-1]
    value = getattr(current, last.name)
    if last.enum_type is not None:
        number = int(value)
        enum_value = last.enum_type.values_by_number.get(number)
        return enum_value.name if enum_value is not None else str(number)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return ""
    return str(value)


@dataclass(frozen=True)
class _EventName:
    """Where the event name comes from: a oneof (set member's name) or a scalar field."""

    parents: tuple[FieldDescriptor, ...]
    oneof: str
    scalar: tuple[FieldDescriptor, ...]

    def read(self, message: Message) -> str:
        if not self.oneof:
            return _scalar_text(message, self.scalar)
        current = message
        for field in self.parents:
            if not current.HasField(field.name):
                return ""
            current = getattr(current, field.name)
        return current.WhichOneof(self.oneof) or ""


def _event_name_source(descriptor: Descriptor, path: str) -> _EventName:
    *parent_names, last = path.split(".")
    parents = _resolve_parents(descriptor, parent_names, path)
    owner = parents[-1].message_type if parents else descriptor
    if owner is not None and last in owner.oneofs_by_name:
        return _EventName(parents=parents, oneof=last, scalar=())
    return _EventName(parents=(), oneof="", scalar=_resolve(descriptor, path, "event_field"))


def _resolve_parents(
    descriptor: Descriptor, names: list[str], path: str
) -> tuple[FieldDescriptor, ...]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in names:
        field = current.fields_by_name.get(name) if current is not None else None
        if field is None or field.message_type is None or field.is_repeated:
            raise SseOptionsError(
                f"SseOptions.event_field {path!r}: {name!r} is not a singular message field"
            )
        fields.append(field)
        current = field.message_type
    return tuple(fields)


@dataclass(frozen=True)
class SseMapping:
    """A method's SseOptions, checked against its request and response types once."""

    id_field: tuple[FieldDescriptor, ...] = ()
    event_name: _EventName | None = None
    default_event: str = DEFAULT_EVENT
    resume_field: tuple[FieldDescriptor, ...] = ()

    @classmethod
    def compile(
        cls,
        options: options_pb2.SseOptions | None,
        *,
        request: Descriptor,
        response: Descriptor,
    ) -> SseMapping:
        """Check the options' paths; raises SseOptionsError naming a bad one."""
        if options is None:
            return cls()
        default = _FORBIDDEN.sub("", options.default_event) or DEFAULT_EVENT
        return cls(
            id_field=_resolve(response, options.id_field, "id_field") if options.id_field else (),
            event_name=(
                _event_name_source(response, options.event_field) if options.event_field else None
            ),
            default_event=default,
            resume_field=(
                _resolve(request, options.resume_field, "resume_field")
                if options.resume_field
                else ()
            ),
        )

    def event_id(self, message: Message) -> str | None:
        """The ``id:`` value, or None when the field is empty or unsafe for the wire."""
        if not self.id_field:
            return None
        value = _scalar_text(message, self.id_field)
        return value if value and not _FORBIDDEN.search(value) else None

    def event_type(self, message: Message) -> str:
        """The ``event:`` name: the oneof member set, or the scalar's value, or the default."""
        name = _FORBIDDEN.sub("", self.event_name.read(message)) if self.event_name else ""
        return name or self.default_event

    def event(self, message: Message, data: bytes) -> SseEvent:
        """The event for one response message whose JSON encoding is ``data``."""
        return SseEvent(data=data, event=self.event_type(message), id=self.event_id(message))

    def apply_resume(self, request: Message, cursor: str) -> None:
        """Write the resume cursor into the request field ``resume_field`` names."""
        if not self.resume_field:
            return
        current = request
        for field in self.resume_field[:-1]:
            current = getattr(current, field.name)
        last = self.resume_field[-1]
        if last.type == FieldDescriptor.TYPE_STRING:
            setattr(current, last.name, cursor)
        elif last.cpp_type in _INTEGER_TYPES and cursor.lstrip("-").isdigit():
            setattr(current, last.name, int(cursor))
        else:
            raise ResumeCursorError(
                f"resume cursor {cursor!r} does not fit field {last.full_name!r}"
            )


_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)
