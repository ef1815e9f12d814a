"""Field names and dotted field paths of protobuf messages, resolved once per descriptor.

A client may name a field by its proto name (`update_mask`) or its JSON name (`updateMask`);
both resolve to the same FieldDescriptor. Lookup tables are cached per Descriptor, so a
request pays a dict lookup per path segment. Invariant: resolution never creates or
mutates messages; `mutable_parent` is the one function that does (it sets presence of
the intermediate messages it walks through).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "TranscodeError",
    "descriptor_of",
    "enum_type_of",
    "fields_by_name",
    "is_map",
    "is_message",
    "is_repeated",
    "message_type_of",
    "mutable_parent",
    "resolve",
]


class TranscodeError(Exception):
    """A request that cannot become a protobuf message: answered with HTTP 400 (or 413/415).

    `field` names the offending field or query parameter as the client wrote it (it becomes
    the google.rpc.BadRequest field violation); `message` says what is wrong with it.
    """

    def __init__(self, message: str, *, field: str = "", http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.http_status = http_status


@cache
def fields_by_name(descriptor: Descriptor) -> Mapping[str, FieldDescriptor]:
    """Every field of `descriptor` under its proto name and its JSON name."""
    table: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        table[field.json_name] = field
    for field in descriptor.fields:
        table[field.name] = field
    return table


def descriptor_of(message: Message) -> Descriptor:
    """`message.DESCRIPTOR` as one type (the stubs offer a union of the Python and upb ones)."""
    return cast(Descriptor, message.DESCRIPTOR)


def message_type_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field; ValueError for other fields."""
    if field.message_type is None:
        raise ValueError(f"{field.full_name} is not a message field")
    return field.message_type


def enum_type_of(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field; ValueError for other fields."""
    if field.enum_type is None:
        raise ValueError(f"{field.full_name} is not an enum field")
    return field.enum_type


def is_message(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE


def is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def resolve(descriptor: Descriptor, names: Sequence[str]) -> tuple[FieldDescriptor, ...] | None:
    """The fields along `names` (proto or JSON names), or None when a segment is not a field.

    Every segment but the last must be a singular message field.
    """
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in names:
        if current is None:
            return None
        field = fields_by_name(current).get(name)
        if field is None:
            return None
        fields.append(field)
        singular_message = is_message(field) and not is_repeated(field)
        current = field.message_type if singular_message else None
    return tuple(fields)


def mutable_parent(message: Message, fields: Sequence[FieldDescriptor]) -> Message:
    """The message that holds `fields[-1]`, walking (and so populating) the ones before it."""
    parent = message
    for field in fields[:-1]:
        parent = getattr(parent, field.name)
    return parent
